"""Failover for a livekit-agents job: its ``AgentSession`` checkpoints its conversation, and a job
restarted on a new pod starts its session with the restored one, with no change to the agent.

The job's primary session (the first ``AgentSession.start`` in the job's context, the one
livekit-agents records on the ``JobContext``) is found by wrapping ``AgentSession.start`` once
per process: a session started in a job's context (:func:`bind`) is claimed by that job's
:class:`SessionCheckpoints`; any other start is left as it is. Before the claimed session
starts, a restored conversation goes into the agent's chat context (after its own
instructions, which win) and into the session's history, so the next checkpoints keep it.

The checkpoint, on each conversation item (``conversation_item_added``: messages and agent
handoffs) and each round of tool calls (``function_tools_executed``): ``{"runtime":
"livekit-agents", "chat": session.history.to_dict(...), "agent": <the current agent's id>}``,
without images, audio, metrics or config updates; its oldest items dropped to fit the bound.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Mapping
from typing import Any

from livekit.agents import Agent, AgentSession, llm

from agent_jobrunner.checkpoint import MAX_CHECKPOINT_BYTES, Checkpointer, CheckpointTooLarge, fit_history

logger = logging.getLogger(__name__)

RUNTIME = "livekit-agents"
_HOOKED = "_agent_jobrunner_checkpoints"

_current: contextvars.ContextVar[SessionCheckpoints | None] = contextvars.ContextVar(
    "agent_jobrunner_lka_checkpoints", default=None
)


def restored_chat(state: Mapping[str, Any] | None) -> tuple[llm.ChatContext, str] | None:
    """The chat context and agent id of a restored checkpoint of this runtime (None: none, not
    ours or unreadable: a warning, the session starts afresh)."""
    if not state or "chat" not in state:
        return None
    if state.get("runtime") != RUNTIME:
        logger.warning("the restored checkpoint is of runtime %r; not restoring it", state.get("runtime"))
        return None
    try:
        chat = llm.ChatContext.from_dict(state["chat"])
    except Exception as err:
        logger.warning("the restored chat context is unreadable, starting afresh: %s", err)
        return None
    agent = state.get("agent")
    return chat, agent if isinstance(agent, str) else ""


def _pinned(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") in ("system", "developer")


def _orphan(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "function_call_output"


def session_state(session: AgentSession[Any], limit: int = MAX_CHECKPOINT_BYTES) -> dict[str, Any]:
    """The checkpoint of ``session``: its history and current agent, fitted to the bound."""
    chat = session.history.to_dict(exclude_timestamp=False, exclude_metrics=True, exclude_config_update=True)
    try:
        agent = session.current_agent.id
    except RuntimeError:  # not started yet
        agent = ""
    state, dropped = fit_history(
        chat["items"],
        lambda items: {"runtime": RUNTIME, "chat": {"items": items}, "agent": agent},
        pinned=_pinned,
        orphan=_orphan,
        limit=limit,
    )
    if dropped:
        logger.debug(
            "the session's history is over the checkpoint bound: dropped its %d oldest items", dropped
        )
    return state


class SessionCheckpoints:
    """One job's side of its primary ``AgentSession``: restore it, then checkpoint it."""

    def __init__(self, restored: Mapping[str, Any] | None, checkpointer: Checkpointer | None) -> None:
        self._restored = restored_chat(restored)
        self._checkpointer = checkpointer
        self.session: AgentSession[Any] | None = None
        self._listening = False

    def claim(self, session: AgentSession[Any]) -> bool:
        """Whether ``session`` is the job's (the first one started in it)."""
        if self.session is None:
            self.session = session
        return self.session is session

    async def before_start(self, session: AgentSession[Any], agent: Agent) -> None:
        if self._restored is not None:
            chat, agent_id = self._restored
            self._restored = None  # once: a session restarted later goes on from its own history
            try:
                await self._restore(session, agent, chat, agent_id)
            except Exception:  # the call goes on, without its past
                logger.exception("could not restore the conversation; the session starts afresh")
        if not self._listening:
            self._listening = True
            session.on("conversation_item_added", self._on_change)
            session.on("function_tools_executed", self._on_change)

    @staticmethod
    async def _restore(
        session: AgentSession[Any], agent: Agent, chat: llm.ChatContext, agent_id: str
    ) -> None:
        history = chat.copy(exclude_instructions=True, exclude_config_update=True)
        context = agent.chat_ctx.copy().merge(
            history.copy(exclude_handoff=True), exclude_instructions=True, exclude_config_update=True
        )
        await agent.update_chat_ctx(context)
        session.history.insert(history.items)
        logger.info(
            "restored the conversation: %d items%s",
            len(history.items),
            f" (it was with agent {agent_id}; the session starts with {agent.id})"
            if agent_id and agent_id != agent.id
            else "",
        )

    def _on_change(self, _event: Any = None) -> None:
        session = self.session
        if session is None or self._checkpointer is None:
            return
        try:
            self._checkpointer.update(session_state(session, self._checkpointer.limit))
        except CheckpointTooLarge as err:  # the instructions alone are over the bound
            logger.warning("could not checkpoint the conversation: %s", err)
        except Exception:  # a checkpoint never costs the call
            logger.exception("could not checkpoint the conversation")


def bind(context: contextvars.Context, checkpoints: SessionCheckpoints) -> None:
    """Make ``checkpoints`` the job's in ``context`` (the job's tasks run in it)."""
    install_start_hook()
    context.run(_current.set, checkpoints)


def install_start_hook() -> None:
    """Wrap ``AgentSession.start`` (once per process) so the job can claim its session."""
    original = AgentSession.start
    if getattr(original, _HOOKED, False):
        return

    @functools.wraps(original)
    async def start(self: AgentSession[Any], agent: Agent, *args: Any, **kwargs: Any) -> Any:
        checkpoints = _current.get()
        if checkpoints is not None and not self._started and checkpoints.claim(self):
            await checkpoints.before_start(self, agent)
        return await original(self, agent, *args, **kwargs)

    setattr(start, _HOOKED, True)
    AgentSession.start = start  # type: ignore[method-assign]
