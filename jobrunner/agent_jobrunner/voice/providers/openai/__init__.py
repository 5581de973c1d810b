"""Providers for OpenAI-compatible HTTP APIs: chat completions, transcription, speech."""

from agent_jobrunner.voice.providers.openai.http import (
    APIConnectionError,
    APIStatusError,
    OpenAIClient,
    Timeouts,
)
from agent_jobrunner.voice.providers.openai.llm import OpenAILLM
from agent_jobrunner.voice.providers.openai.stt import OpenAISTT
from agent_jobrunner.voice.providers.openai.tts import OpenAITTS

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "OpenAIClient",
    "OpenAILLM",
    "OpenAISTT",
    "OpenAITTS",
    "Timeouts",
]
