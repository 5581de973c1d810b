"""One job: the user's entrypoint, its ``JobContext``, the room it runs in, and its teardown."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from livekit import rtc
from livekit.protocol import agent as lk_agent

from agent_jobrunner.bounded import bounded
from agent_jobrunner.checkpoint import Checkpointer, restored_state
from agent_jobrunner.outcome import EndCause, JobEnd
from agent_jobrunner.protocol import pb
from agent_jobrunner.subscribe import subscribe_policy

logger = logging.getLogger(__name__)

ShutdownCallback = Callable[[], Awaitable[None]] | Callable[[str], Awaitable[None]]
Entrypoint = Callable[["JobContext"], Awaitable[None]]

ROOM_DISCONNECTED_REASON = "room disconnected"


class EntrypointError(Exception):
    """``AGENT_ENTRYPOINT`` does not name an importable ``async def entrypoint(ctx)``."""


def import_attribute(spec: str) -> tuple[Any, str]:
    """Import ``package.module:attribute``; (the object, the attribute's name). The working
    directory (the image's ``WORKDIR``, ``/app`` in the runner image) is searched first, as
    ``python -m`` and ``python agent.py`` would: an agent's ``agent.py`` copied there imports
    as ``agent`` with no ``PYTHONPATH`` set (the ``agent-jobrunner`` script's own directory is
    what Python puts on the path, not the working directory)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise EntrypointError(f"{spec!r} is not package.module:function")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:
        raise EntrypointError(f"cannot import {module_name}: {type(err).__name__}: {err}") from err
    found = getattr(module, attribute, None)
    if found is None:
        raise EntrypointError(f"module {module_name} has no attribute {attribute!r}")
    return found, attribute


def is_async_callable(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004
    )


def load_entrypoint(spec: str) -> Entrypoint:
    """Import ``package.module:function`` and check it is an async function."""
    function, attribute = import_attribute(spec)
    if not is_async_callable(function):
        raise EntrypointError(f"{spec} is not an async function (want: async def {attribute}(ctx))")
    entrypoint: Entrypoint = function
    return entrypoint


# ------------------------------------------------------------------------------------ context


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "agent_jobrunner_job_context", default=None
)


def current_job_context() -> JobContext | None:
    """The job context of the running job (set for its entrypoint and every task it starts);
    None outside a job."""
    return _current.get()


def get_job_context() -> JobContext:
    """The running job's context, for library code (as livekit-agents' ``get_job_context()``)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no job context: not called from a job's entrypoint or a task it started")
    return ctx


class JobContext:
    """What the entrypoint gets: the job, the connected room and a way to end the job.

    A job restarted on a new pod after its pod died (failover) finds the conversation state it
    last checkpointed in :attr:`restored`; :meth:`checkpoint` saves it (the voice pipeline does
    so by itself)."""

    def __init__(
        self,
        *,
        job: lk_agent.Job,
        room: rtc.Room,
        url: str,
        participant_identity: str,
        participant_name: str,
        participant_metadata: str,
        participant_attributes: Mapping[str, str],
        on_shutdown: Callable[[str], None],
        userdata: dict[str, Any] | None = None,
        restored: dict[str, Any] | None = None,
        restarts: int = 0,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self._job = job
        self._restored = restored
        self._restarts = restarts
        self._checkpointer = checkpointer
        self._userdata = userdata if userdata is not None else {}
        self._room = room
        self._url = url
        self._participant_identity = participant_identity
        self._participant_name = participant_name
        self._participant_metadata = participant_metadata
        self._participant_attributes = dict(participant_attributes)
        self._on_shutdown = on_shutdown
        self._shutdown_callbacks: list[ShutdownCallback] = []

    @property
    def job(self) -> lk_agent.Job:
        """The ``livekit.protocol.agent.Job`` this runner was started with."""
        return self._job

    @property
    def userdata(self) -> dict[str, Any]:
        """What the module's ``prewarm(userdata)`` loaded in this pod before the job came
        (``agent_jobrunner.prewarm``); empty without one."""
        return self._userdata

    @property
    def room(self) -> rtc.Room:
        """The room, already connected."""
        return self._room

    @property
    def agent(self) -> rtc.LocalParticipant:
        """The agent's own participant in the room."""
        return self._room.local_participant

    @property
    def url(self) -> str:
        """The LiveKit server URL the room was joined on."""
        return self._url

    @property
    def participant_identity(self) -> str:
        return self._participant_identity

    @property
    def participant_name(self) -> str:
        return self._participant_name

    @property
    def participant_metadata(self) -> str:
        return self._participant_metadata

    @property
    def participant_attributes(self) -> Mapping[str, str]:
        return dict(self._participant_attributes)

    @property
    def restored(self) -> dict[str, Any] | None:
        """The state the job last checkpointed on the pod that died, when this is a restart of
        the job on a new pod; None on a first start (or if it could not be read)."""
        return self._restored

    @property
    def restarts(self) -> int:
        """How many times the job was restarted on a new pod (0 on its first start)."""
        return self._restarts

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` (a JSON object, at most ``MAX_CHECKPOINT_BYTES`` as JSON, no secrets)
        as what a restart of this job on a new pod gets as :attr:`restored`. Only the latest
        counts; an equal state is not sent again. Raises ``CheckpointTooLarge`` over the bound."""
        if self._checkpointer is None:
            logger.debug("no checkpoints outside the runner: state not kept")
            return
        self._checkpointer.update(state)

    def shutdown(self, reason: str = "") -> None:
        """End the job (successfully): the entrypoint is cancelled if still running, the
        shutdown callbacks run, the room is left and the runner exits."""
        self._on_shutdown(reason)

    def add_shutdown_callback(self, callback: ShutdownCallback) -> None:
        """Run ``async callback()`` (or ``async callback(reason)``) when the job ends."""
        if not inspect.iscoroutinefunction(callback) and not inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004
        ):
            raise TypeError("a shutdown callback must be an async function")
        self._shutdown_callbacks.append(callback)

    @property
    def shutdown_callbacks(self) -> list[ShutdownCallback]:
        return list(self._shutdown_callbacks)


def _takes_reason(callback: ShutdownCallback) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


# ------------------------------------------------------------------------------------ the job


class JobSession:
    """Joins the room, runs the entrypoint as its own task, reports how the job ended
    (``on_end``, at most once) and tears it all down within a time budget."""

    def __init__(
        self,
        request: pb.StartJobRequest,
        job: lk_agent.Job,
        entrypoint: Entrypoint,
        on_end: Callable[[JobEnd], None],
        userdata: dict[str, Any] | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self._request = request
        self._checkpointer = checkpointer
        self._job = job
        self._entrypoint = entrypoint
        self._on_end = on_end
        self._userdata = userdata if userdata is not None else {}
        self._policy = subscribe_policy(request.auto_subscribe)
        self._room = rtc.Room()
        self._ctx: JobContext | None = None
        self._context = contextvars.copy_context()  # the entrypoint's and its callbacks'
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ended = False
        self.joined = asyncio.Event()
        # tasks that ignored cancellation past the budget (the process must exit without them)
        self.abandoned: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        """Join the room and start the entrypoint task; raises if the room cannot be joined."""
        room = self._room
        room.on("disconnected", self._on_room_disconnected)
        if self._policy.kinds:
            room.on("track_published", self._on_track_published)
        await room.connect(
            self._request.url,
            self._request.token,
            options=rtc.RoomOptions(auto_subscribe=self._policy.auto_subscribe),
        )
        if self._policy.kinds:
            for participant in list(room.remote_participants.values()):
                for publication in list(participant.track_publications.values()):
                    self._on_track_published(publication, participant)
        logger.info(
            "joined room %s as %s", room.name, room.local_participant.identity, extra={"job_id": self._job.id}
        )
        self.joined.set()
        self._launch()

    def _launch(self) -> None:
        """Start the entrypoint task, with the job's context current in it."""
        room = self._room
        self._ctx = JobContext(
            job=self._job,
            room=room,
            url=self._request.url,
            participant_identity=self._request.participant_identity,
            participant_name=self._request.participant_name,
            participant_metadata=self._request.participant_metadata,
            participant_attributes=self._request.participant_attributes,
            on_shutdown=self._on_ctx_shutdown,
            userdata=self._userdata,
            restored=restored_state(self._request),
            restarts=self._request.restarts,
            checkpointer=self._checkpointer,
        )
        self._context.run(_current.set, self._ctx)
        self._task = asyncio.create_task(
            self._run_entrypoint(self._ctx), name="entrypoint", context=self._context
        )
        self._task.add_done_callback(self._on_entrypoint_done)

    async def _run_entrypoint(self, ctx: JobContext) -> None:
        await self._entrypoint(ctx)

    def _end(self, end: JobEnd) -> None:
        if self._ended or self._stopping:
            return
        self._ended = True
        self._on_end(end)

    def _on_ctx_shutdown(self, reason: str) -> None:
        self._end(JobEnd(EndCause.USER_SHUTDOWN, reason=reason))

    def _on_entrypoint_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            if not self._stopping:
                self._end(JobEnd(EndCause.ENTRYPOINT_FAILED, error="the entrypoint task was cancelled"))
            return
        error = task.exception()
        if error is None:
            self._end(JobEnd(EndCause.ENTRYPOINT_RETURNED, reason="entrypoint returned"))
        elif not self._stopping:
            failed = JobEnd(
                EndCause.ENTRYPOINT_FAILED, error=f"{type(error).__name__}: {error}", exception=error
            )
            if not self._room.isconnected():
                # the room closed under the entrypoint (deleted, say): the job ended, it did not fail
                self._end(JobEnd(EndCause.ROOM_DISCONNECTED, reason=ROOM_DISCONNECTED_REASON))
            else:
                # an error caused by the room closing can arrive just before its disconnect event:
                # give that event a moment to decide first (_end keeps the first verdict)
                asyncio.get_running_loop().call_later(0.5, self._end, failed)

    def _on_room_disconnected(self, reason: Any = None) -> None:
        if self._stopping or self._task is None:  # ours, or a failed join (reported by start())
            return
        name = _disconnect_reason_name(reason)
        logger.warning("the room disconnected (%s)", name, extra={"job_id": self._job.id})
        self._end(JobEnd(EndCause.ROOM_DISCONNECTED, reason=ROOM_DISCONNECTED_REASON))

    def _on_track_published(self, publication: Any, participant: Any) -> None:
        if self._policy.wants(publication.kind) and not publication.subscribed:
            logger.debug("subscribing to %s track %s of %s", publication.kind, publication.sid, participant)
            publication.set_subscribed(True)

    async def stop(self, reason: str, budget: float) -> bool:
        """Cancel the entrypoint, run the shutdown callbacks, leave the room; True if all of it
        finished within ``budget`` seconds (whatever did not is abandoned)."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        clean = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            if not await self._bounded(task, deadline, "the entrypoint did not finish after cancellation"):
                clean = False
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                logger.warning("the entrypoint raised while stopping", exc_info=error)
        ctx = self._ctx
        if ctx is not None:
            for callback in ctx.shutdown_callbacks:
                call = callback(reason) if _takes_reason(callback) else callback()  # type: ignore[call-arg]
                # in the job's context, as the entrypoint: get_job_context() works in a callback
                step = asyncio.create_task(_awaited(call), context=self._context)
                if not await self._bounded(step, deadline, f"shutdown callback {callback!r}"):
                    clean = False
                elif not step.cancelled() and step.exception() is not None:
                    logger.error("shutdown callback %r failed", callback, exc_info=step.exception())
        if self._room.isconnected():
            leave = asyncio.ensure_future(self._room.disconnect())
            if not await self._bounded(leave, deadline, "leaving the room"):
                clean = False
            elif not leave.cancelled() and leave.exception() is not None:
                logger.warning("leaving the room failed", exc_info=leave.exception())
        return clean

    async def _bounded(self, task: asyncio.Future[Any], deadline: float, what: str) -> bool:
        return await bounded(task, deadline, what, self.abandoned)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _disconnect_reason_name(reason: Any) -> str:
    try:
        name: str = rtc.DisconnectReason.Name(reason)
        return name
    except Exception:
        return str(reason)
