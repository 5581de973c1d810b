"""Example agents: entrypoints for ``AGENT_ENTRYPOINT``."""
