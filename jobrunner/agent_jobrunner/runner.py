"""The runner's lifecycle: attach idle, take one job, run it, end it, exit with a code that says how."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from livekit.protocol import agent as lk_agent

from agent_jobrunner.checkpoint import Checkpointer
from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.jobruntime import EntrypointError, JobRun, LoadedAgent, load_agent
from agent_jobrunner.link import HelloState, OperatorLink
from agent_jobrunner.logforward import LogBuffer
from agent_jobrunner.outcome import (
    EXIT_OK,
    EndCause,
    JobEnd,
    exit_code,
    final_job_state,
    is_shutdown,
    is_user_exit,
    shutdown_budget,
)
from agent_jobrunner.protocol import pb

logger = logging.getLogger(__name__)

# how long an idle runner spends telling the operator it is leaving
IDLE_CLOSE_SECONDS = 1.0
# the longest prewarm error the runner reports (the operator puts it in an Event)
PREWARM_ERROR_LIMIT = 1000
# of a job's shutdown budget, the part kept for delivering the last messages
FLUSH_SHARE = 0.2
FLUSH_MAX_SECONDS = 2.0


class Runner:
    def __init__(self, config: RunnerConfig, logs: LogBuffer) -> None:
        self.config = config
        self.link = OperatorLink(
            config, hello_state=self._hello_state, on_message=self._on_message, logs=logs
        )
        self._end: asyncio.Future[JobEnd] | None = None
        self._agent: LoadedAgent | None = None
        self._entrypoint_error = ""
        self._request: pb.StartJobRequest | None = None
        self._job: lk_agent.Job | None = None
        self._running_job: pb.RunningJob | None = None
        self._checkpoints: Checkpointer | None = None
        self._session: JobRun | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._start_answered = False
        self._shutdown_requested = False
        self._watchdog: asyncio.Task[None] | None = None
        # tasks that ignored cancellation past the shutdown budget
        self.abandoned: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            await self._load_agent()
            self.link.start()
            logger.info(
                "runner started for pod %s/%s; attaching to %s",
                self.config.pod_namespace,
                self.config.pod_name,
                self.config.operator_address,
            )
            end = await self._end
            return await self._finish(end)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self._cancel(self._watchdog)
            await self._cancel(self._start_task)
            await self.link.close(0)
            if self._agent is not None:
                await self._agent.aclose()

    async def _load_agent(self) -> None:
        # Loaded (and prewarmed) before attaching, so a warm pod has the user's code ready when
        # its job comes. A failure is said in the Hello (state PREWARM_FAILED): the operator
        # counts no idle pod, tells the user and replaces the pod; a job sent anyway is refused.
        try:
            self._agent = await load_agent(self.config.runtime, self.config.entrypoint)
        except EntrypointError as err:
            self._entrypoint_error = str(err)
            logger.error("cannot load the entrypoint %s: %s", self.config.entrypoint, err)

    def _trigger(self, end: JobEnd) -> None:
        if self._end is None or self._end.done():
            return
        self._end.set_result(end)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._end is not None and self._end.done():
            logger.info("%s received while already shutting down", name)
            return
        logger.info("%s received: shutting down", name)
        self._trigger(JobEnd(EndCause.SIGNALLED, reason=name))

    def _hello_state(self) -> HelloState:
        if self._running_job is not None:
            return pb.RUNNER_STATE_RUNNING, self._running_job, ""
        if self._agent is None and self._entrypoint_error:
            return pb.RUNNER_STATE_PREWARM_FAILED, None, self._entrypoint_error[:PREWARM_ERROR_LIMIT]
        return pb.RUNNER_STATE_IDLE, None, ""

    # ------------------------------------------------------------------------------ messages

    def _on_message(self, message: pb.SupervisorMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "start_job":
            self._on_start_job(message.start_job)
        elif kind == "shutdown":
            self._on_shutdown_request(message.shutdown)
        else:
            logger.warning("ignoring an unexpected %s from the operator", kind)

    def _on_start_job(self, request: pb.StartJobRequest) -> None:
        job = lk_agent.Job()
        parse_error = ""
        try:
            job.ParseFromString(request.job)
        except Exception as err:
            parse_error = f"the job in StartJobRequest is unreadable: {err}"
        if self._job is not None and self._job.id == job.id and not parse_error:
            # the same job again (a re-sent request): it is already ours, not a second job
            logger.info("StartJobRequest for job %s repeated; ignored", job.id, extra={"job_id": job.id})
            return
        if self._job is not None:
            error = f"already running job {self._job.id}; a runner pod takes one job only"
            self._refuse_start(job.id, error)
            return
        if self._end is not None and self._end.done():
            self._refuse_start(job.id, "the runner is shutting down")
            return
        self._accept(request, job)
        if parse_error:
            self._trigger(JobEnd(EndCause.START_FAILED, error=parse_error))
            return
        logger.info(
            "job %s received for room %s%s",
            job.id,
            job.room.name,
            f" (restart {request.restarts}, checkpoint {request.restored_seq})" if request.restarts else "",
            extra={"job_id": job.id, "room": job.room.name},
        )
        self._start_task = asyncio.create_task(self._start_job(), name="start-job")
        self._watchdog = asyncio.create_task(self._watch_operator(), name="reattach-watchdog")

    def _accept(self, request: pb.StartJobRequest, job: lk_agent.Job) -> None:
        self._request = request
        self._job = job
        # numbered on from the restored checkpoint's seq (a restart of the job on a new pod)
        self._checkpoints = Checkpointer(job.id, self.link, request.restored_seq)
        self._running_job = pb.RunningJob(
            job_id=job.id,
            room_name=job.room.name,
            started_at_unix_ms=time.time_ns() // 1_000_000,
            job=request.job,
        )

    def _refuse_start(self, job_id: str, error: str) -> None:
        logger.warning("refusing StartJobRequest for job %s: %s", job_id or "?", error)
        self.link.send(pb.RunnerMessage(start_job_response=pb.StartJobResponse(job_id=job_id, error=error)))

    def _on_shutdown_request(self, request: pb.ShutdownRequest) -> None:
        self._shutdown_requested = True
        logger.info("the operator asked to shut down (%s, grace %d ms)", request.reason, request.grace_ms)
        self._trigger(
            JobEnd(
                EndCause.SHUTDOWN_REQUESTED,
                reason=request.reason,
                grace=shutdown_budget(request.grace_ms, self.config.shutdown_timeout_seconds),
            )
        )

    def _status(self, state: pb.JobState.ValueType, error: str = "") -> None:
        job_id = self._job.id if self._job is not None else ""
        self.link.send(pb.RunnerMessage(job_status=pb.JobStatus(job_id=job_id, state=state, error=error)))

    # ------------------------------------------------------------------------------ the job

    async def _start_job(self) -> None:
        assert self._request is not None
        assert self._job is not None
        self._status(pb.JOB_STATE_CONNECTING)
        if self._agent is None:
            self._trigger(JobEnd(EndCause.START_FAILED, error=f"bad entrypoint: {self._entrypoint_error}"))
            return
        session = self._agent.job(self._request, self._job, self._trigger, self._checkpoints)
        self._session = session
        try:
            await session.start()
        except Exception as err:
            self._trigger(JobEnd(EndCause.START_FAILED, error=f"could not join the room: {err}"))
            return
        # the entrypoint task exists now: answer before anything it does can be sent
        self._start_answered = True
        self.link.send(pb.RunnerMessage(start_job_response=pb.StartJobResponse(job_id=self._job.id)))
        # RUNNING once the room is joined (a livekit-agents entrypoint joins in ctx.connect()):
        # until then the operator holds back the pool's refill, whose pod start would take the
        # CPU this join needs
        await session.joined.wait()
        if self._end is not None and not self._end.done():
            self._status(pb.JOB_STATE_RUNNING)

    async def _watch_operator(self) -> None:
        """A running job survives a lost stream for the re-attach window, not longer."""
        window = self.config.reattach_window_seconds
        while True:
            await self.link.wait_detached()
            logger.warning(
                "lost the operator stream; the job keeps running while re-attaching (%.0fs)", window
            )
            try:
                await asyncio.wait_for(self.link.wait_attached(), window)
            except TimeoutError:
                self._trigger(
                    JobEnd(
                        EndCause.OPERATOR_LOST,
                        reason="operator lost",
                        error=f"could not re-attach to the operator within {window:g}s",
                    )
                )
                return
            logger.info("re-attached to the operator; the job went on")

    async def _finish(self, end: JobEnd) -> int:
        await self._cancel(self._watchdog)
        loop = asyncio.get_running_loop()
        if self._job is None:
            return await self._finish_idle(end)
        job_id = self._job.id
        budget = end.grace if end.grace is not None else self.config.shutdown_timeout_seconds
        deadline = loop.time() + budget
        flush_reserve = min(FLUSH_MAX_SECONDS, budget * FLUSH_SHARE)
        failed = final_job_state(end.cause) == pb.JOB_STATE_FAILED
        logger.log(
            logging.WARNING if failed else logging.INFO,
            "job %s ending: %s%s%s",
            job_id,
            end.cause.value,
            f" ({end.reason})" if end.reason else "",
            f": {end.error}" if end.error else "",
            extra={"job_id": job_id},
        )

        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            await asyncio.wait({self._start_task}, timeout=max(0.0, deadline - flush_reserve - loop.time()))
        if not self._start_answered:
            error = end.error or f"the job ended before it started: {end.cause.value}"
            self.link.send(
                pb.RunnerMessage(start_job_response=pb.StartJobResponse(job_id=job_id, error=error))
            )
            self._start_answered = True
        if end.cause is EndCause.ENTRYPOINT_FAILED:
            logger.error(
                "the entrypoint failed: %s", end.error, exc_info=end.exception, extra={"job_id": job_id}
            )
        if is_user_exit(end.cause) or failed:
            self._end_checkpoints()  # the job ended on its own: it is not restarted elsewhere
        if is_user_exit(end.cause):
            self.link.send(pb.RunnerMessage(user_exit=pb.UserExit(job_id=job_id, reason=end.reason)))
        if failed:
            self._status(pb.JOB_STATE_FAILED, end.error or end.cause.value)
        else:
            self._status(pb.JOB_STATE_SHUTTING_DOWN)

        if self._session is not None:
            teardown = max(0.0, deadline - flush_reserve - loop.time())
            clean = await self._session.stop(end.reason or end.cause.value, teardown)
            self.abandoned.extend(self._session.abandoned)
            if not clean:
                logger.error("the job did not wind down within %.1fs; exiting anyway", budget)
        # what the teardown checkpointed (a reply cut off) goes before the job's last messages
        self._end_checkpoints()
        if not failed:
            self._status(pb.JOB_STATE_SUCCEEDED)
        if self._shutdown_requested or is_shutdown(end.cause):
            # ShutdownRequest, SIGTERM (pod deletion) and a lost operator all end as a shutdown
            self.link.send(pb.RunnerMessage(shutdown_response=pb.ShutdownResponse(job_id=job_id)))
        code = exit_code(end.cause)
        logger.info("job %s ended; runner exiting with code %d", job_id, code, extra={"job_id": job_id})
        delivered = await self.link.close(
            max(flush_reserve, deadline - loop.time()),
            wait_for_attach=end.cause is not EndCause.OPERATOR_LOST,
        )
        if not delivered and not is_shutdown(end.cause):
            logger.warning("the last messages may not have reached the operator")
        return code

    async def _finish_idle(self, end: JobEnd) -> int:
        logger.info("shutting down while idle (%s)", end.reason or end.cause.value)
        if end.cause is EndCause.SHUTDOWN_REQUESTED:
            self.link.send(pb.RunnerMessage(shutdown_response=pb.ShutdownResponse()))
        await self.link.close(IDLE_CLOSE_SECONDS, wait_for_attach=False)
        return EXIT_OK

    def _end_checkpoints(self) -> None:
        """The job is ending: no more checkpoints; one not yet written goes before what is
        queued next (the job's last messages), and none is sent again after a re-attach."""
        if self._checkpoints is not None:
            self._checkpoints.close()
        unsent = self.link.checkpoints.end()
        if unsent is not None:
            self.link.send(unsent)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
