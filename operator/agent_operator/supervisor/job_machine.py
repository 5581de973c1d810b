"""The supervisor's job state machine: a job on a pod goes assigned -> running -> ended, by
what its runner says, by its timers (start timeout, re-attach grace) and by the operator.

``end`` is the one place a job ends: exactly one outcome per job reaches the listener. A
failed or unresponsive runner's unit is terminated through the injected ``Terminator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from livekit.protocol import agent as lk_agent

from agent_jobrunner.protocol import pb
from agent_operator import metrics
from agent_operator.supervisor.session import RunnerSession, SessionClosed
from agent_operator.supervisor.slots import PodSlot
from agent_operator.supervisor.types import (
    DEATH_EXITED,
    DEATH_LOST,
    DEATH_OOM,
    DEATH_PROBE,
    JobOutcome,
    JobRecord,
    JobState,
    OutcomeStatus,
    SupervisorListener,
    Terminator,
)

log = logging.getLogger("agent_operator.supervisor")
# how long the success of a runner that shut down on a signal nobody here sent waits for its
# pod's status (a failed liveness probe fails it instead); it ends sooner once the pod exits
SIGNALLED_HOLD_SECONDS = 10.0


class StartFailed(Exception):
    """The job did not start; the message says why."""


class JobMachine:
    def __init__(
        self,
        listener: SupervisorListener,
        terminator: Terminator,
        reattach_grace: float,
        clock: Callable[[], float],
        call: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.listener = listener
        self.terminator = terminator
        self.reattach_grace = reattach_grace
        self.clock = clock
        self._call = call  # runs a listener/terminator call in the background

    # -- what the operator asks ----------------------------------------------------------------
    async def assign(self, slot: PodSlot, request: pb.StartJobRequest, path: str) -> JobRecord:
        if slot.job is not None:
            raise StartFailed(f"pod {slot.binding.pod} already had a job; a pod is never reused")
        job = lk_agent.Job()
        job.ParseFromString(request.job)
        session = slot.session
        path = path or ("warm" if session is not None and not session.closed and session.idle else "cold")
        record = JobRecord(
            job_id=job.id, room=job.room.name, binding=slot.binding, assigned_at=self.clock(), path=path
        )
        slot.hold_job(record, request)
        slot.set_timer("start", self._start_timeout(slot, path))
        log.info("job assigned to pod (%s path)", path, extra=record.log_fields())
        if session is not None and not session.closed:
            await self.send_start(slot, session)
        return record

    async def shutdown(self, slot: PodSlot, reason: str, grace: float) -> JobOutcome | None:
        record = slot.job
        if record is None or record.state is JobState.ENDED:
            return record.outcome if record else None
        slot.shutdown_asked = True
        session = slot.session
        if session is not None and not session.closed:
            with contextlib.suppress(SessionClosed):
                await session.send(
                    pb.SupervisorMessage(
                        shutdown=pb.ShutdownRequest(reason=reason, grace_ms=max(0, int(grace * 1000)))
                    )
                )
        assert slot.ended is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.ended.wait(), timeout=grace)
        if record.outcome is None:
            await self.end(
                slot,
                JobOutcome(OutcomeStatus.KILLED, "shutdown", f"runner did not shut down within {grace:.1f}s"),
                terminate="runner did not shut down within its grace period",
            )
        return record.outcome

    async def unit_exited(self, slot: PodSlot, detail: str, succeeded: bool = False) -> None:
        """The pod's container ended (``succeeded``: exit code 0). A pod is never restarted,
        so its runner will not come back: a running job without an outcome ends now, not
        when the re-attach grace runs out."""
        record = slot.job
        if record is not None and slot.held is not None:
            await self.end(slot, slot.held)  # it exited, and nothing said it failed
            return
        if record is None or record.state is JobState.ENDED:
            return
        if record.state is JobState.RUNNING:
            if succeeded:  # it ended the job while its stream was down: the end never reached us
                await self.end(slot, JobOutcome(OutcomeStatus.SUCCESS, "runner exited 0", detail))
            else:
                await self.end(
                    slot,
                    JobOutcome(OutcomeStatus.FAILED, "runner exited", detail, death=DEATH_EXITED),
                    terminate="runner exited with its job running",
                )
            return
        if slot.attached:
            return
        await self.end(
            slot,
            JobOutcome(OutcomeStatus.FAILED, "runner exited before starting the job", detail),
            terminate="runner exited before starting the job",
        )

    async def pod_failed(self, slot: PodSlot, reason: str, message: str) -> None:
        record = slot.job
        if record is None or record.state is JobState.ENDED:
            return
        metrics.JOB_POD_FAILURES.labels(record.deployment.namespace, record.deployment.name, reason).inc()
        death = DEATH_OOM if reason == "OOMKilled" else DEATH_PROBE
        death = death if record.state is JobState.RUNNING else ""
        await self.end(
            slot,
            JobOutcome(OutcomeStatus.FAILED, reason, message, death=death),
            terminate=f"pod failed: {reason}",
        )

    # -- what the runner's stream tells ----------------------------------------------------------
    async def attached(self, slot: PodSlot, session: RunnerSession, hello: pb.Hello) -> None:
        record = slot.job
        if session.prewarm_error:
            deployment = slot.binding.deployment
            metrics.PREWARM_FAILURES.labels(deployment.namespace, deployment.name).inc()
            log.warning("the agent's prewarm failed: %s", session.prewarm_error, extra=slot.fields())
            self._call(self.listener.runner_prewarm_failed(slot.binding, session.prewarm_error))
        if hello.state == pb.RUNNER_STATE_RUNNING:
            if record is None:
                self._adopt(slot, hello.running_job)
            elif record.state is JobState.ASSIGNED:
                # the StartJobResponse was lost with the old stream; the runner says it runs
                self._mark_started(slot)
            log.info("runner re-attached with its running job", extra=slot.fields())
        elif record is not None:
            if record.state is JobState.ASSIGNED:
                await self.send_start(slot, session)
            elif record.state is JobState.RUNNING:
                await self.end(
                    slot,
                    JobOutcome(
                        OutcomeStatus.FAILED, "runner lost its job", "re-attached idle", death=DEATH_LOST
                    ),
                    terminate="runner restarted and lost its job",
                )

    def detached(
        self, slot: PodSlot, why: str, dropped: bool = False, reattaching: Callable[[], bool] = lambda: False
    ) -> None:
        """The pod's stream ended; ``dropped``: not closed by us (a killed runner, or one about
        to attach again). ``reattaching``: whether to give it the full grace after all."""
        record = slot.job
        if record is None or record.state is JobState.ENDED or slot.held is not None:
            return
        quick = slot.binding.lost_after
        if dropped and record.state is JobState.RUNNING and quick is not None and quick < self.reattach_grace:
            slot.set_timer("reattach", self._lost_timeout(slot, quick, why, reattaching))
        else:
            slot.set_timer("reattach", self._reattach_timeout(slot, self.reattach_grace, why))

    def _adopt(self, slot: PodSlot, running: pb.RunningJob) -> None:
        job = lk_agent.Job()
        with contextlib.suppress(Exception):
            job.ParseFromString(running.job)
        record = JobRecord(
            job_id=running.job_id,
            room=running.room_name or job.room.name,
            binding=slot.binding,
            assigned_at=self.clock(),
            state=JobState.RUNNING,
            started_at=self.clock(),
            adopted=True,
        )
        slot.hold_job(record, None)
        assert slot.started is not None
        slot.started.set_result(record)
        log.info("adopted running job from re-attaching runner", extra=record.log_fields())
        self._call(self.listener.job_adopted(record))

    async def message(self, slot: PodSlot, session: RunnerSession, kind: str, msg: pb.RunnerMessage) -> None:
        """A job message of the runner: start_job_response, job_status, user_exit or
        shutdown_response."""
        if kind == "start_job_response":
            resp = msg.start_job_response
            if not self._matches(slot, session, resp.job_id):
                return
            if resp.error:
                await self.end(
                    slot,
                    JobOutcome(OutcomeStatus.FAILED, "start failed", resp.error),
                    terminate="job failed to start",
                )
            else:
                self._mark_started(slot)
        elif kind == "job_status":
            status = msg.job_status
            if not self._matches(slot, session, status.job_id):
                return
            if status.state == pb.JOB_STATE_FAILED:
                await self.end(
                    slot,
                    JobOutcome(OutcomeStatus.FAILED, "entrypoint failed", status.error or "unknown error"),
                    terminate="job failed",
                )
            elif status.state == pb.JOB_STATE_RUNNING and slot.job and slot.job.state is JobState.RUNNING:
                self._call(self.listener.job_joined(slot.job))  # its room is joined
        elif kind == "user_exit" and self._matches(slot, session, msg.user_exit.job_id):
            reason = msg.user_exit.reason or "entrypoint finished"
            await self.end(slot, JobOutcome(OutcomeStatus.SUCCESS, reason))
        elif kind == "shutdown_response" and self._matches(slot, session, msg.shutdown_response.job_id):
            if slot.shutdown_asked:
                await self.end(slot, JobOutcome(OutcomeStatus.SUCCESS, "shut down on request"))
            else:
                self.signalled(slot)

    def signalled(self, slot: PodSlot) -> None:
        """The runner shut down on a signal the operator did not send: the kubelet's SIGTERM,
        for the pod's deletion or for a failed liveness probe. Which one only the pod's status
        and Events tell, so the job's success is held until the pod exits (``unit_exited``) or
        a failure found there ends it (``pod_failed``), or for ``SIGNALLED_HOLD_SECONDS``."""
        record = slot.job
        if record is None or record.state is JobState.ENDED or slot.held is not None:
            return
        slot.held = JobOutcome(OutcomeStatus.SUCCESS, "shut down on a signal")
        slot.cancel_timer("reattach")
        log.info("runner shut down on a signal; its outcome waits for the pod's status", extra=slot.fields())
        slot.set_timer("signalled", self._held_timeout(slot))

    def _matches(self, slot: PodSlot, session: RunnerSession, job_id: str) -> bool:
        record = slot.job
        if record is None or record.job_id != job_id:
            log.warning(
                "runner spoke of job %r, which is not its job",
                job_id,
                extra={"pod": str(session.binding.pod), "deployment": str(session.binding.deployment)},
            )
            return False
        return True

    def _mark_started(self, slot: PodSlot) -> None:
        record = slot.job
        if record is None or record.state is not JobState.ASSIGNED:
            return
        record.state = JobState.RUNNING
        record.started_at = self.clock()
        slot.cancel_timer("start")
        metrics.JOB_START_LATENCY.labels(
            record.deployment.namespace, record.deployment.name, record.path
        ).observe(record.started_at - record.assigned_at)
        metrics.JOBS_STARTED.labels(record.deployment.namespace, record.deployment.name, record.path).inc()
        if slot.started is not None and not slot.started.done():
            slot.started.set_result(record)
        log.info("job started in %.3fs", record.started_at - record.assigned_at, extra=record.log_fields())
        self._call(self.listener.job_started(record))

    async def send_start(self, slot: PodSlot, session: RunnerSession) -> None:
        request = slot.request
        if request is None or session.start_sent or slot.job is None:
            return  # at most once per stream: assign() and the attach path may both get here
        if session.prewarm_error:  # the agent cannot run here: the room token never goes out
            await self.end(
                slot,
                JobOutcome(OutcomeStatus.FAILED, "prewarm failed", session.prewarm_error),
                terminate="the agent's prewarm failed",
            )
            return
        session.start_sent = True
        session.idle = False
        try:
            await session.send(pb.SupervisorMessage(start_job=request))
        except SessionClosed:
            log.info(
                "stream closed before StartJobRequest went out; will resend on re-attach",
                extra=slot.job.log_fields(),
            )

    # -- timers ----------------------------------------------------------------------------------
    async def _start_timeout(self, slot: PodSlot, path: str) -> None:
        record = slot.job
        assert record is not None
        timeout = record.binding.heartbeat.start_timeout
        await asyncio.sleep(timeout)
        if record.state is JobState.ASSIGNED:
            attached = "attached" if slot.attached else "never attached"
            await self.end(
                slot,
                JobOutcome(
                    OutcomeStatus.FAILED,
                    "start timeout",
                    f"runner did not start the job within {timeout:.1f}s ({path} path, {attached})",
                ),
                terminate="start timeout",
            )

    async def _held_timeout(self, slot: PodSlot) -> None:
        await asyncio.sleep(SIGNALLED_HOLD_SECONDS)
        if slot.held is not None:
            await self.end(slot, slot.held)

    async def _reattach_timeout(self, slot: PodSlot, grace: float, why: str) -> None:
        await asyncio.sleep(grace)
        record = slot.job
        if record is not None and record.state is not JobState.ENDED and not slot.attached:
            await self.end(
                slot,
                JobOutcome(
                    OutcomeStatus.FAILED,
                    "runner lost",
                    f"{why}; no re-attach within {grace:.1f}s",
                    death=DEATH_LOST if record.state is JobState.RUNNING else "",
                ),
                terminate="runner stream lost",
            )

    async def _lost_timeout(
        self, slot: PodSlot, quick: float, why: str, reattaching: Callable[[], bool]
    ) -> None:
        """A running job's dropped runner, judged dead after ``quick`` seconds: its pod is not
        deleted here (the kubelet then tells why it died; the operator removes it). One that may
        be attaching again then (``reattaching``) gets the full re-attach grace."""
        await asyncio.sleep(quick)
        if slot.attached:
            return
        if reattaching():
            await self._reattach_timeout(slot, self.reattach_grace - quick, why)
            return
        record = slot.job
        if record is not None and record.state is JobState.RUNNING:
            error = f"{why}; no re-attach within {quick:.1f}s"
            await self.end(slot, JobOutcome(OutcomeStatus.FAILED, "runner lost", error, death=DEATH_LOST))

    # -- the end -----------------------------------------------------------------------------------
    async def end(self, slot: PodSlot, outcome: JobOutcome, terminate: str | None = None) -> None:
        """The one place a job ends: exactly one outcome per job."""
        record = slot.job
        if record is None or record.state is JobState.ENDED:
            return
        record.state = JobState.ENDED
        record.outcome = outcome
        slot.cancel_timer("start")
        slot.cancel_timer("reattach")
        slot.cancel_timer("signalled")
        slot.held = None
        slot.request = None
        fut = slot.started
        if fut is not None and not fut.done():
            fut.set_exception(
                StartFailed(f"{outcome.reason}: {outcome.error}" if outcome.error else outcome.reason)
            )
            fut.exception()  # retrieved: nobody may be waiting
        if slot.ended is not None:
            slot.ended.set()
        metrics.JOBS_ENDED.labels(
            record.deployment.namespace, record.deployment.name, outcome.status.value
        ).inc()
        if record.started_at is not None:
            metrics.JOB_DURATION.labels(
                record.deployment.namespace, record.deployment.name, outcome.status.value
            ).observe(self.clock() - record.started_at)
        level = logging.INFO if outcome.status is OutcomeStatus.SUCCESS else logging.WARNING
        log.log(
            level,
            "job ended: %s (%s)%s",
            outcome.status.value,
            outcome.reason,
            f": {outcome.error}" if outcome.error else "",
            extra=record.log_fields(),
        )
        if terminate is not None:
            log.warning("terminating pod: %s", terminate, extra=record.log_fields())
            self._call(self.terminator.terminate(record.pod, terminate))
            session = slot.session
            if session is not None and outcome.status is OutcomeStatus.KILLED:
                session.close(grpc.StatusCode.ABORTED, terminate)
        self._call(self.listener.job_ended(record, outcome))
