"""The livekit-agents job runtime (``AGENT_RUNTIME=livekit-agents``): an unmodified livekit-agents
agent, one job per pod, in that framework's own ``JobContext``.

Imported only when that runtime is chosen; it needs ``livekit-agent-operator[livekit-agents]``.
``version`` checks the installed release first, ``agent`` loads and prewarms the agent,
``session`` runs one job, ``plugins`` holds offline STT/TTS/LLM plugins for tests without keys.
"""
