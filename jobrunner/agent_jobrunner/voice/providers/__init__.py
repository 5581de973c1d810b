"""Provider implementations: offline ones (Silero, PocketSphinx, espeak-ng, rules) and OpenAI-compatible ones.

Import them from their modules (``agent_jobrunner.voice.providers.silero`` ...): each pulls in
its own dependencies (onnxruntime, pocketsphinx, aiohttp) only when imported.
"""
