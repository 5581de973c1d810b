"""What the pipeline reports as it goes: one event type per stage, and a small typed emitter."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

from agent_jobrunner.voice.chat import ChatMessage
from agent_jobrunner.voice.metrics import TurnMetrics

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class UserStartedSpeaking:
    participant: str


@dataclasses.dataclass(frozen=True)
class UserStoppedSpeaking:
    participant: str
    duration: float  # seconds of speech


@dataclasses.dataclass(frozen=True)
class TranscriptCommitted:
    text: str


@dataclasses.dataclass(frozen=True)
class AgentStartedSpeaking:
    pass


@dataclasses.dataclass(frozen=True)
class AgentStoppedSpeaking:
    interrupted: bool
    text: str  # what was heard (the spoken part when interrupted)
    played: float  # seconds of audio that went out


@dataclasses.dataclass(frozen=True)
class FunctionCalled:
    name: str
    arguments: str
    result: str
    error: str = ""


@dataclasses.dataclass(frozen=True)
class MessageAdded:
    message: ChatMessage


@dataclasses.dataclass(frozen=True)
class TurnFailed:
    stage: str  # "stt", "llm", "tts", "tool", "playout"
    error: str


@dataclasses.dataclass(frozen=True)
class TurnCompleted:
    metrics: TurnMetrics


VoiceEvent = (
    UserStartedSpeaking
    | UserStoppedSpeaking
    | TranscriptCommitted
    | AgentStartedSpeaking
    | AgentStoppedSpeaking
    | FunctionCalled
    | MessageAdded
    | TurnFailed
    | TurnCompleted
)

E = TypeVar("E", bound=VoiceEvent)


class Events:
    """Callbacks per event type (``on(AgentStoppedSpeaking, fn)``) or for all (``on_any(fn)``).

    Callbacks run synchronously in the pipeline's task; one that raises is logged and skipped.
    """

    def __init__(self) -> None:
        self._by_type: dict[type[VoiceEvent], list[Callable[[VoiceEvent], None]]] = {}
        self._any: list[Callable[[VoiceEvent], None]] = []

    def on(self, kind: type[E], callback: Callable[[E], None]) -> None:
        self._by_type.setdefault(kind, []).append(callback)  # type: ignore[arg-type]

    def on_any(self, callback: Callable[[VoiceEvent], None]) -> None:
        self._any.append(callback)

    def emit(self, event: VoiceEvent) -> None:
        for callback in [*self._by_type.get(type(event), []), *self._any]:
            try:
                callback(event)
            except Exception:
                logger.exception("a voice event callback failed on %s", type(event).__name__)
