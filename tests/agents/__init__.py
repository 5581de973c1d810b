"""Entrypoints the runner's end-to-end tests run (``AGENT_ENTRYPOINT=tests.agents.simple:...``)."""
