"""The provider interfaces: what a VAD, an STT, an LLM and a TTS must offer the pipeline.

Each is a typing Protocol: any object with these methods fits, no base class needed.
Providers raise :class:`ProviderError` (or a subclass) for failures of the service; the
pipeline logs them as a failed turn and goes on listening.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from agent_jobrunner.voice.audio import Pcm
from agent_jobrunner.voice.chat import ChatContext, ToolCall
from agent_jobrunner.voice.tools import FunctionTool


class ProviderError(Exception):
    """A provider could not do its part of a turn (a service error, a bad response, a crash)."""


# ------------------------------------------------------------------------------------ VAD


class VADEventType(enum.Enum):
    START_OF_SPEECH = "start_of_speech"
    END_OF_SPEECH = "end_of_speech"


@dataclasses.dataclass(frozen=True)
class VADEvent:
    type: VADEventType
    # stream time (seconds since the stream began) of the end of the audio the event was decided on
    position: float
    # stream time of the start of the speech (its first voiced chunk)
    speech_start: float
    # END_OF_SPEECH: the end of the last voiced chunk; the silence after it is not speech
    speech_end: float | None = None
    # START_OF_SPEECH: the speech so far, up to ``position``; END_OF_SPEECH: the whole utterance,
    # its trailing silence trimmed (both with a little padding before the start)
    speech: Pcm | None = None


class VADStream(Protocol):
    sample_rate: int

    async def push(self, pcm: Pcm) -> list[VADEvent]:
        """Feed audio at ``sample_rate``; the events it completed, in order."""
        ...

    @property
    def position(self) -> float:
        """Seconds of audio pushed so far (stream time)."""
        ...

    @property
    def speaking(self) -> bool: ...

    async def aclose(self) -> None: ...


class VAD(Protocol):
    sample_rate: int

    def stream(self) -> VADStream: ...


# ------------------------------------------------------------------------------------ STT


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float | None = None
    language: str = ""


class STT(Protocol):
    """Batch recognition of one utterance."""

    sample_rate: int

    async def recognize(self, audio: Pcm) -> Transcript: ...


class STTStream(Protocol):
    async def push(self, audio: Pcm) -> None:
        """Feed audio at the STT's ``sample_rate`` while the user speaks."""
        ...

    async def finish(self) -> Transcript:
        """The utterance ended: the final transcript of everything pushed."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingSTT(STT, Protocol):
    """Recognition while the user speaks, so little is left to do when they stop."""

    def stream(self) -> STTStream: ...


# ------------------------------------------------------------------------------------ LLM


@dataclasses.dataclass(frozen=True)
class TextDelta:
    text: str


ChatChunk = TextDelta | ToolCall


class LLM(Protocol):
    def chat(self, context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[ChatChunk]:
        """Stream the reply to ``context``: text deltas, and complete tool calls (each once)."""
        ...


# ------------------------------------------------------------------------------------ TTS


class TTS(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[Pcm]:
        """Stream the speech of ``text`` at ``sample_rate``, chunk by chunk as it is made."""
        ...
