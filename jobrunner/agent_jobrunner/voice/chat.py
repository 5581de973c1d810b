"""The conversation so far: what the model is given on every turn.

A long call would outgrow the model's context window, so a context can be bounded
(``ContextLimits``): when a message takes it past the limits, the oldest turns are dropped
whole (a turn starts with a user message; an assistant's tool calls and their results go with
it), never the system instructions and never the newest turn.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, cast

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})


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

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-ready data (fields at their defaults left out)."""
        data: dict[str, Any] = {"role": self.role, "content": self.content, "created_at": self.created_at}
        if self.tool_calls:
            data["tool_calls"] = [dataclasses.asdict(call) for call in self.tool_calls]
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        if self.name:
            data["name"] = self.name
        if self.interrupted:
            data["interrupted"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatMessage:
        """The message :meth:`to_dict` made; raises ``ValueError`` for anything else."""
        role = data.get("role")
        if role not in ROLES:
            raise ValueError(f"not a chat message role: {role!r}")
        try:
            calls = tuple(
                ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"]))
                for c in data.get("tool_calls", ())
            )
            created_at = float(data.get("created_at", time.time()))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a malformed chat message: {err!r}") from err
        return cls(
            cast(Role, role),
            str(data.get("content", "")),
            tool_calls=calls,
            tool_call_id=str(data.get("tool_call_id", "")),
            name=str(data.get("name", "")),
            interrupted=bool(data.get("interrupted", False)),
            created_at=created_at,
        )


@dataclasses.dataclass(frozen=True)
class ContextLimits:
    """At most ``max_turns`` turns and ``max_chars`` characters of message text besides the
    system instructions (None: no limit)."""

    max_turns: int | None = None
    max_chars: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_chars"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit), not {value}")


def _size(message: ChatMessage) -> int:
    return len(message.content) + sum(len(c.name) + len(c.arguments) for c in message.tool_calls)


class ChatContext:
    """An ordered list of messages, starting with the instructions (if any)."""

    def __init__(
        self, messages: list[ChatMessage] | None = None, limits: ContextLimits | None = None
    ) -> None:
        self._messages: list[ChatMessage] = list(messages or [])
        self.limits = limits or ContextLimits()
        self._listeners: list[Callable[[ChatMessage], None]] = []
        self._trim()

    @classmethod
    def with_instructions(cls, instructions: str) -> ChatContext:
        return cls([ChatMessage("system", instructions)] if instructions else [])

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def append(self, message: ChatMessage) -> ChatMessage:
        self._messages.append(message)
        self._trim()
        for listener in list(self._listeners):
            listener(message)
        return message

    def on_append(self, listener: Callable[[ChatMessage], None]) -> None:
        """Call ``listener(message)`` after each :meth:`append` (a copy does not keep it)."""
        self._listeners.append(listener)

    def restore(self, messages: Iterable[ChatMessage]) -> None:
        """Carry on an earlier conversation: this context's own system messages (the code's
        instructions), then ``messages`` without theirs; trimmed to the limits."""
        self._messages = [m for m in self._messages if m.role == "system"] + [
            m for m in messages if m.role != "system"
        ]
        self._trim()

    def limit(self, limits: ContextLimits) -> None:
        """Bound this context from now on (trims at once if it is already past the limits)."""
        self.limits = limits
        self._trim()

    def copy(self) -> ChatContext:
        return ChatContext(self._messages, self.limits)

    def _trim(self) -> None:
        """Drop the oldest whole turns until the limits hold (or only the newest turn is left)."""
        system = [m for m in self._messages if m.role == "system"]
        turns: list[list[ChatMessage]] = []
        for message in self._messages:
            if message.role == "system":
                continue
            if message.role == "user" or not turns:
                turns.append([])
            turns[-1].append(message)
        limits, dropped = self.limits, 0
        chars = sum(_size(m) for turn in turns for m in turn)
        while len(turns) - dropped > 1 and (
            (limits.max_turns is not None and len(turns) - dropped > limits.max_turns)
            or (limits.max_chars is not None and chars > limits.max_chars)
        ):
            chars -= sum(_size(m) for m in turns[dropped])
            dropped += 1
        if dropped:
            self._messages = system + [m for turn in turns[dropped:] for m in turn]

    def last(self, role: Role | None = None) -> ChatMessage | None:
        for message in reversed(self._messages):
            if role is None or message.role == role:
                return message
        return None

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(list(self._messages))

    def __len__(self) -> int:
        return len(self._messages)
