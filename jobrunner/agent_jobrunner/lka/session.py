"""One job in livekit-agents' own job runtime: its real ``JobContext``, driven as its job process does.

What livekit-agents' job process does around the entrypoint, this does under the runner, with
our outcomes: the ``JobContext`` is built from the StartJobRequest (job, URL, token, accept
arguments) and is the current job context (``get_job_context()``, which ``AgentSession`` and
the plugins use) for the entrypoint and every teardown step; ``ctx.connect()``, ``ctx.room``,
``ctx.proc.userdata``, ``wait_for_participant``, ``add_participant_entrypoint`` are the
framework's own. As there, the entrypoint returning does not end the job (an ``AgentSession``
it started goes on): ``ctx.shutdown()`` ends it (success), so does the room going away; an
entrypoint that raises fails it. One addition: an entrypoint that returns without ever having
connected or shut down ends the job (success) instead of leaving the pod up for nothing.

The teardown, within the runner's budget: the entrypoint gets a share of it to finish, then is
cancelled; the primary ``AgentSession`` is closed; ``on_session_end`` runs; the room is left;
the shutdown callbacks run (with the reason); the context's own tasks and temp files go.
Records of the job carry ``job_id`` and ``room`` (the context's log fields). The job's
``AgentSession`` checkpoints its conversation and, in a job restarted on a new pod, starts
with the restored one (``agent_jobrunner.lka.failover``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import JobContext, JobProcess
from livekit.agents.ipc.inference_executor import InferenceExecutor
from livekit.agents.job import JobAcceptArguments, RunningJobInfo, _JobContextVar
from livekit.agents.utils import http_context
from livekit.protocol import agent as lk_agent

from agent_jobrunner.bounded import bounded, bounded_step
from agent_jobrunner.checkpoint import Checkpointer, restored_state
from agent_jobrunner.lka.agent import AgentParts
from agent_jobrunner.lka.failover import SessionCheckpoints, bind
from agent_jobrunner.lka.inference import NoInferenceExecutor, close_inference
from agent_jobrunner.outcome import EndCause, JobEnd
from agent_jobrunner.protocol import pb

logger = logging.getLogger(__name__)

# of the teardown budget, the part the entrypoint has to return on its own before it is cancelled
ENTRYPOINT_SHARE = 0.3
# an error from the entrypoint right before the room's disconnect event: let that event decide
DISCONNECT_GRACE_SECONDS = 0.5


class LkaAgent:
    """A loaded, prewarmed livekit-agents agent; its ``JobProcess`` serves this pod's one job."""

    def __init__(
        self, parts: AgentParts, process: JobProcess, inference: InferenceExecutor | None = None
    ) -> None:
        self.parts = parts
        self.process = process
        self.inference = inference if inference is not None else NoInferenceExecutor()

    async def aclose(self) -> None:
        """Stop what the agent started for the pod (its inference process)."""
        await close_inference(self.inference)

    def job(
        self,
        request: pb.StartJobRequest,
        job: lk_agent.Job,
        on_end: Callable[[JobEnd], None],
        checkpointer: Checkpointer | None = None,
    ) -> LkaJobSession:
        return LkaJobSession(self, request, job, on_end, checkpointer)


def running_job_info(request: pb.StartJobRequest, job: lk_agent.Job, worker_id: str = "") -> RunningJobInfo:
    return RunningJobInfo(
        accept_arguments=JobAcceptArguments(
            name=request.participant_name,
            identity=request.participant_identity,
            metadata=request.participant_metadata,
            attributes=dict(request.participant_attributes),
        ),
        job=job,
        url=request.url,
        token=request.token,
        worker_id=worker_id,
        fake_job=False,
    )


class LkaJobSession:
    def __init__(
        self,
        agent: LkaAgent,
        request: pb.StartJobRequest,
        job: lk_agent.Job,
        on_end: Callable[[JobEnd], None],
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self._agent = agent
        self._job = job
        self._on_end = on_end
        self._room = rtc.Room()
        # as livekit-agents does: ctx.room.name is the job's room before ctx.connect()
        self._room._info.name = job.room.name
        self._ctx = JobContext(
            proc=agent.process,
            info=running_job_info(request, job),
            room=self._room,
            on_connect=self._on_connect,
            on_shutdown=self._on_ctx_shutdown,
            inference_executor=agent.inference,
        )
        self._ctx.log_context_fields = {"job_id": job.id, "room": job.room.name}
        # the job's context: get_job_context() and the per-job HTTP session, for every step
        self._context = contextvars.copy_context()
        self._context.run(_JobContextVar.set, self._ctx)
        self._context.run(http_context._new_session_ctx)
        # failover: the job's AgentSession checkpoints, and starts with a restored conversation
        self.checkpoints = SessionCheckpoints(restored_state(request), checkpointer)
        bind(self._context, self.checkpoints)
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self.joined = asyncio.Event()  # ctx.connect() returned: the room is joined
        self._shutdown_called = False
        self._stopping = False
        self._ended = False
        self.abandoned: list[asyncio.Task[Any]] = []

    @property
    def context(self) -> JobContext:
        return self._ctx

    def _spawn(self, step: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A task in the job's context (``get_job_context()`` works in it)."""

        async def run() -> Any:
            return await step

        return asyncio.create_task(run(), name=name, context=self._context)

    async def start(self) -> None:
        self._ctx._on_setup()  # the job's log fields on every handler of the root logger
        self._room.on("disconnected", self._on_room_disconnected)
        self._task = self._spawn(self._agent.parts.entrypoint(self._ctx), "entrypoint")
        self._task.add_done_callback(self._on_entrypoint_done)

    # ------------------------------------------------------------------------------ how it ends

    def _end(self, end: JobEnd) -> None:
        if self._ended or self._stopping:
            return
        self._ended = True
        self._on_end(end)

    def _on_connect(self) -> None:
        self._connected = True
        self.joined.set()

    def _on_ctx_shutdown(self, reason: str) -> None:
        self._shutdown_called = True
        self._end(JobEnd(EndCause.USER_SHUTDOWN, reason=reason))

    def _on_room_disconnected(self, reason: Any = None) -> None:
        if self._stopping:
            return
        logger.warning("the room disconnected (%s)", reason, extra={"job_id": self._job.id})
        self._end(JobEnd(EndCause.ROOM_DISCONNECTED, reason="room disconnected"))

    def _on_entrypoint_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        if task.cancelled():
            self._end(JobEnd(EndCause.ENTRYPOINT_FAILED, error="the entrypoint task was cancelled"))
            return
        error = task.exception()
        if error is None:
            if not self._connected and not self._shutdown_called:
                self._end(
                    JobEnd(EndCause.ENTRYPOINT_RETURNED, reason="entrypoint returned without connecting")
                )
            else:
                logger.info(
                    "the entrypoint returned; the job goes on until ctx.shutdown() or the room ends",
                    extra={"job_id": self._job.id},
                )
            return
        failed = JobEnd(EndCause.ENTRYPOINT_FAILED, error=f"{type(error).__name__}: {error}", exception=error)
        if self._room.isconnected():
            asyncio.get_running_loop().call_later(DISCONNECT_GRACE_SECONDS, self._end, failed)
        elif self._connected:
            self._end(JobEnd(EndCause.ROOM_DISCONNECTED, reason="room disconnected"))
        else:
            self._end(failed)

    # ------------------------------------------------------------------------------ teardown

    async def stop(self, reason: str, budget: float) -> bool:
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        clean = True
        ctx = self._ctx
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=budget * ENTRYPOINT_SHARE)
            if not task.done():
                task.cancel()
                clean &= await bounded(
                    task, deadline, "the entrypoint did not finish after cancellation", self.abandoned
                )
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("the entrypoint raised while stopping", exc_info=task.exception())
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        session = ctx._primary_agent_session
        if session is not None:
            steps.append(("closing the AgentSession", session.aclose))
        session_end = self._agent.parts.session_end
        if session_end is not None:
            timeout = self._agent.parts.session_end_timeout
            steps.append(("on_session_end", lambda: asyncio.wait_for(session_end(ctx), timeout)))
        steps.append(("the session-end report", ctx._on_session_end))
        if self._room.isconnected():
            steps.append(("leaving the room", self._room.disconnect))
        steps.append(("the shutdown callbacks", lambda: self._shutdown_callbacks(reason)))
        for what, step in steps:
            clean &= await bounded_step(self._spawn(step(), what), deadline, what, self.abandoned)
        if ctx._pending_tasks:
            for pending in list(ctx._pending_tasks):
                pending.cancel()
            clean &= await bounded_step(
                asyncio.gather(*ctx._pending_tasks, return_exceptions=True),
                deadline,
                "the job's tasks",
                self.abandoned,
            )
        for what, cleanup in (
            ("the job context's cleanup", ctx._on_cleanup),
            ("the HTTP session", http_context._close_http_ctx),
        ):
            clean &= await bounded_step(self._spawn(cleanup(), what), deadline, what, self.abandoned)
        return clean

    async def _shutdown_callbacks(self, reason: str) -> None:
        callbacks = [
            self._spawn(callback(reason), "shutdown-callback") for callback in self._ctx._shutdown_callbacks
        ]
        results = await asyncio.gather(*callbacks, return_exceptions=True)
        for callback, result in zip(self._ctx._shutdown_callbacks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                logger.error("shutdown callback %r failed", callback, exc_info=result)
