"""The voice pipeline's checkpoint: its chat context and turn index, for a job restarted on a new pod.

A pipeline running in a job checkpoints ``{"runtime": "native", "chat": [message, ...], "turn":
<index>}`` on every change of its chat context (``ChatMessage.to_dict`` per message); a pipeline
started in a job restored from such a checkpoint carries on that conversation (after its own
instructions) and that turn index. A chat too long for the checkpoint bound loses its oldest
messages (never the system instructions) until it fits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from agent_jobrunner.checkpoint import MAX_CHECKPOINT_BYTES, fit_history
from agent_jobrunner.voice.chat import ChatMessage

logger = logging.getLogger(__name__)

RUNTIME = "native"


@dataclasses.dataclass(frozen=True)
class Restored:
    messages: list[ChatMessage]
    turn: int


def chat_state(
    messages: Sequence[ChatMessage], turn: int, limit: int = MAX_CHECKPOINT_BYTES
) -> dict[str, Any]:
    """The checkpoint of a conversation, its oldest non-system messages dropped until it fits
    ``limit`` bytes of JSON (and then tool results whose call was dropped)."""
    state, dropped = fit_history(
        [message.to_dict() for message in messages],
        lambda chat: {"runtime": RUNTIME, "chat": chat, "turn": turn},
        pinned=lambda item: item["role"] == "system",
        orphan=lambda item: item["role"] == "tool",
        limit=limit,
    )
    if dropped:
        logger.debug(
            "the chat context is over the checkpoint bound (%d bytes): dropped its %d oldest messages",
            limit,
            dropped,
        )
    return state


def restored_chat(state: Mapping[str, Any] | None) -> Restored | None:
    """The conversation in a restored checkpoint of this runtime (None: none, or not ours);
    a message that cannot be read is skipped with a warning."""
    if not state or "chat" not in state:
        return None
    if state.get("runtime", RUNTIME) != RUNTIME:
        logger.warning("the restored checkpoint is of runtime %r; not restoring it", state.get("runtime"))
        return None
    chat = state["chat"]
    if not isinstance(chat, list):
        logger.warning("the restored chat is a JSON %s, not a list; not restoring it", type(chat).__name__)
        return None
    messages: list[ChatMessage] = []
    for item in chat:
        try:
            if not isinstance(item, Mapping):
                raise ValueError(f"a JSON {type(item).__name__}, not an object")
            messages.append(ChatMessage.from_dict(item))
        except ValueError as err:
            logger.warning("skipping a restored chat message: %s", err)
    turn = state.get("turn", 0)
    return Restored(messages, turn if isinstance(turn, int) and turn >= 0 else 0)
