"""The conversation so far: what the model is given on every turn."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """The model asking for a function: ``arguments`` is the JSON text it produced."""

    id: str
    name: str
    arguments: str


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str = ""
    # assistant messages: the functions the model called in this message
    tool_calls: tuple[ToolCall, ...] = ()
    # tool messages: which call this is the result of
    tool_call_id: str = ""
    name: str = ""
    # assistant messages: the user cut the reply off; ``content`` is what was actually heard
    interrupted: bool = False
    created_at: float = dataclasses.field(default_factory=time.time)


class ChatContext:
    """An ordered list of messages, starting with the instructions (if any)."""

    def __init__(self, messages: list[ChatMessage] | None = None) -> None:
        self._messages: list[ChatMessage] = list(messages or [])

    @classmethod
    def with_instructions(cls, instructions: str) -> ChatContext:
        return cls([ChatMessage("system", instructions)] if instructions else [])

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def append(self, message: ChatMessage) -> ChatMessage:
        self._messages.append(message)
        return message

    def copy(self) -> ChatContext:
        return ChatContext(self._messages)

    def last(self, role: Role | None = None) -> ChatMessage | None:
        for message in reversed(self._messages):
            if role is None or message.role == role:
                return message
        return None

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(list(self._messages))

    def __len__(self) -> int:
        return len(self._messages)
