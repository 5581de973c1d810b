"""The supervisor: a ``grpc.aio`` server for runner streams, and the jobs it starts on them.

Flow for one pod: the operator says it ``expect``s the pod (or a resolver vouches for it
after a restart), ``assign``s it a job, and the supervisor sends ``StartJobRequest`` as soon
as the pod's runner is attached. The job then lives in a ``JobRecord`` until exactly one
outcome is reported to the listener. A failed or unresponsive runner's unit is terminated
through the injected ``Terminator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import grpc
from livekit.protocol import agent as lk_agent

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, pb, pb_grpc
from agent_operator import metrics
from agent_operator.supervisor import takeover
from agent_operator.supervisor.admission import (
    AdmissionSettings,
    AttachGate,
    GuardedAuthenticator,
    LogThrottle,
)
from agent_operator.supervisor.heartbeat import HeartbeatSettings
from agent_operator.supervisor.logbridge import reemit
from agent_operator.supervisor.session import RunnerSession, SessionClosed
from agent_operator.supervisor.types import (
    Authenticator,
    AuthError,
    AuthUnavailable,
    JobOutcome,
    JobRecord,
    JobState,
    NotServingRunners,
    NullListener,
    OutcomeStatus,
    PodIdentity,
    Resolver,
    RunnerBinding,
    SupervisorListener,
    Terminator,
)
from agent_operator.tasks import BackgroundTasks

log = logging.getLogger("agent_operator.supervisor")


@dataclasses.dataclass(frozen=True)
class SupervisorSettings:
    # the first message (Hello) must arrive within this
    hello_timeout: float = 10.0
    # a running job whose stream broke waits this long for its runner to re-attach
    reattach_grace: float = 15.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # for pods attached through the resolver without settings of their own
    default_heartbeat: HeartbeatSettings = dataclasses.field(default_factory=HeartbeatSettings)
    # caps on streams that have not attached yet and on credential checks (see admission)
    admission: AdmissionSettings = dataclasses.field(default_factory=AdmissionSettings)


class StartFailed(Exception):
    """The job did not start; the message says why."""


class Supervisor:
    def __init__(
        self,
        authenticator: Authenticator,
        terminator: Terminator,
        listener: SupervisorListener | None = None,
        settings: SupervisorSettings | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminator = terminator
        self.listener: SupervisorListener = listener or NullListener()
        self.settings = settings or SupervisorSettings()
        self.gate = AttachGate(self.settings.admission)
        self.authenticator = GuardedAuthenticator(authenticator, self.settings.admission, clock)
        self._refusal_log = LogThrottle()
        self.resolver = resolver
        self.clock = clock
        self._server: grpc.aio.Server | None = None
        self._bindings: dict[str, RunnerBinding] = {}
        self._sessions: dict[str, RunnerSession] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._requests: dict[str, pb.StartJobRequest] = {}
        self._started: dict[str, asyncio.Future[JobRecord]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks = BackgroundTasks(log, "supervisor callback")

    # -- server ----------------------------------------------------------------------------
    async def start(
        self, address: str = "127.0.0.1:0", credentials: grpc.ServerCredentials | None = None
    ) -> int:
        """Serve on ``address``; returns the bound port."""
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_concurrent_streams", 10_000),
            ]
        )
        pb_grpc.add_RunnerSupervisorServicer_to_server(_Servicer(self), server)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        await server.start()
        self._server = server
        log.info("runner supervisor listening on %s", address.rsplit(":", 1)[0] + f":{port}")
        return int(port)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving. Jobs are not ended: their runners keep running and re-attach to the
        next supervisor (an operator restart must not drop calls)."""
        for session in list(self._sessions.values()):
            session.close(grpc.StatusCode.UNAVAILABLE, "supervisor stopping")
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        for task in self._timers.values():
            task.cancel()
        await asyncio.gather(*self._timers.values(), return_exceptions=True)
        self._timers.clear()
        await self._tasks.close()

    # -- what the operator tells us ---------------------------------------------------------
    def expect(self, binding: RunnerBinding) -> None:
        """A pod whose runner may attach (created by, or adopted into, the operator)."""
        self._bindings[binding.pod.uid] = binding

    def forget(self, pod_uid: str) -> None:
        """The pod is gone: drop everything about it and close its stream."""
        self._bindings.pop(pod_uid, None)
        self._cancel_timer(pod_uid)
        session = self._sessions.get(pod_uid)
        if session is not None:
            session.close(grpc.StatusCode.NOT_FOUND, "pod removed")
        record = self._jobs.get(pod_uid)
        if record is None or record.state is JobState.ENDED:
            self._drop_job(pod_uid)

    def job(self, pod_uid: str) -> JobRecord | None:
        return self._jobs.get(pod_uid)

    def jobs(self) -> list[JobRecord]:
        return list(self._jobs.values())

    def attached(self, pod_uid: str) -> bool:
        session = self._sessions.get(pod_uid)
        return session is not None and not session.closed

    def idle_runners(self) -> list[RunnerBinding]:
        """Attached runners with no job, oldest attach first."""
        return [
            s.binding
            for s in self._sessions.values()
            if not s.closed and s.idle and s.pod_uid not in self._jobs
        ]

    async def assign(self, pod_uid: str, request: pb.StartJobRequest, path: str = "") -> JobRecord:
        """Give the pod its job; StartJobRequest goes out as soon as its runner is attached.

        ``path`` labels the start in the metrics; by default "warm" when the runner is attached
        and idle, else "cold"."""
        binding = self._bindings.get(pod_uid)
        if binding is None:
            raise StartFailed(f"pod {pod_uid} is not expected by this supervisor")
        if pod_uid in self._jobs:
            raise StartFailed(f"pod {binding.pod} already had a job; a pod is never reused")
        job = lk_agent.Job()
        job.ParseFromString(request.job)
        session = self._sessions.get(pod_uid)
        path = path or ("warm" if session is not None and not session.closed and session.idle else "cold")
        record = JobRecord(
            job_id=job.id, room=job.room.name, binding=binding, assigned_at=self.clock(), path=path
        )
        self._jobs[pod_uid] = record
        self._requests[pod_uid] = request
        self._started[pod_uid] = asyncio.get_running_loop().create_future()
        self._ended[pod_uid] = asyncio.Event()
        self._set_timer(pod_uid, self._start_timeout(pod_uid, path))
        log.info("job assigned to pod (%s path)", path, extra=record.log_fields())
        if session is not None and not session.closed:
            await self._send_start(session, record)
        return record

    async def unit_exited(self, pod_uid: str, detail: str) -> None:
        """The pod's container ended: a job whose runner never started it fails now, not at the
        start timeout (a bad image, a crash at import, a command that does not exist)."""
        record = self._jobs.get(pod_uid)
        if record is None or record.state is not JobState.ASSIGNED or self.attached(pod_uid):
            return
        await self._end_job(
            pod_uid,
            JobOutcome(OutcomeStatus.FAILED, "runner exited before starting the job", detail),
            terminate="runner exited before starting the job",
        )

    async def wait_started(self, pod_uid: str) -> JobRecord:
        """Wait for the runner's StartJobResponse; raises StartFailed if the job failed to start."""
        fut = self._started.get(pod_uid)
        if fut is None:
            raise StartFailed(f"no job assigned to pod {pod_uid}")
        return await asyncio.shield(fut)

    async def wait_ended(self, pod_uid: str) -> JobOutcome | None:
        event = self._ended.get(pod_uid)
        record = self._jobs.get(pod_uid)
        if event is None or record is None:
            return None
        await event.wait()
        return record.outcome

    async def shutdown_job(self, pod_uid: str, reason: str, grace: float) -> JobOutcome | None:
        """Ask the runner to end its job within ``grace``; kill its unit if it does not."""
        record = self._jobs.get(pod_uid)
        if record is None or record.state is JobState.ENDED:
            return record.outcome if record else None
        session = self._sessions.get(pod_uid)
        if session is not None and not session.closed:
            with contextlib.suppress(SessionClosed):
                await session.send(
                    pb.SupervisorMessage(
                        shutdown=pb.ShutdownRequest(reason=reason, grace_ms=max(0, int(grace * 1000)))
                    )
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended[pod_uid].wait(), timeout=grace)
        if record.outcome is None:
            await self._end_job(
                pod_uid,
                JobOutcome(OutcomeStatus.KILLED, "shutdown", f"runner did not shut down within {grace:.1f}s"),
                terminate="runner did not shut down within its grace period",
            )
        return record.outcome

    # -- attach ------------------------------------------------------------------------------
    async def _attach(self, requests: AsyncIterator[pb.RunnerMessage], context: Any) -> None:
        peer = context.peer()
        with self.gate.admitting(peer) as refusal:  # a pending slot until attached or refused
            if refusal is not None:
                reason, details = refusal
                await self._refuse(context, reason, grpc.StatusCode.RESOURCE_EXHAUSTED, details, peer)
                return
            admitted = await self._handshake(requests, context, peer)
        if admitted is not None:
            await self._serve(*admitted, requests, context)

    async def _handshake(
        self, requests: AsyncIterator[pb.RunnerMessage], context: Any, peer: str
    ) -> tuple[RunnerBinding, pb.Hello] | None:
        """Read the Hello and check it: the pod's binding, or None once the stream is refused."""
        try:
            first = await asyncio.wait_for(anext(requests), timeout=self.settings.hello_timeout)
        except TimeoutError:
            await self._refuse(
                context, "protocol", grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello in time", peer
            )
            return None
        except StopAsyncIteration:
            await self._refuse(
                context, "protocol", grpc.StatusCode.INVALID_ARGUMENT, "stream ended before its Hello", peer
            )
            return None
        except Exception as exc:
            await self._refuse(
                context, "protocol", grpc.StatusCode.INVALID_ARGUMENT, f"unreadable: {exc}", peer
            )
            return None
        if first.WhichOneof("message") != "hello":
            await self._refuse(
                context, "protocol", grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello", peer
            )
            return None
        hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            await self._refuse(
                context,
                "protocol",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {hello.protocol_version} is not supported (want {PROTOCOL_VERSION})",
                peer,
            )
            return None
        claimed = PodIdentity(hello.pod_namespace, hello.pod_name, hello.pod_uid)
        try:
            proven = await self.authenticator.authenticate(hello.credential)
        except AuthError as exc:
            await self._refuse(context, "auth", grpc.StatusCode.UNAUTHENTICATED, str(exc), peer, claimed)
            return None
        except AuthUnavailable as exc:
            await self._refuse(
                context, "auth_unavailable", grpc.StatusCode.UNAVAILABLE, str(exc), peer, claimed
            )
            return None
        if proven != claimed:
            await self._refuse(
                context,
                "auth",
                grpc.StatusCode.PERMISSION_DENIED,
                f"credential belongs to pod {proven} ({proven.uid}), not {claimed} ({claimed.uid})",
                peer,
                claimed,
            )
            return None
        binding = self._bindings.get(proven.uid)
        if binding is None and self.resolver is not None:
            try:
                binding = await self.resolver(proven)
            except NotServingRunners as exc:
                await self._refuse(context, "handover", grpc.StatusCode.UNAVAILABLE, str(exc), peer, claimed)
                return None
            if binding is not None:
                self._bindings[proven.uid] = binding
        if binding is None:
            await self._refuse(
                context,
                "unknown_pod",
                grpc.StatusCode.PERMISSION_DENIED,
                f"pod {proven} is not a runner pod of this operator",
                peer,
                claimed,
            )
            return None
        refusal = self._check_reattach(binding, hello)
        if refusal:
            await self._refuse(
                context, "protocol", grpc.StatusCode.FAILED_PRECONDITION, refusal, peer, claimed
            )
            return None
        return binding, hello

    async def _refuse(
        self,
        context: Any,
        reason: str,
        code: grpc.StatusCode,
        details: str,
        peer: str,
        claimed: PodIdentity | None = None,
    ) -> None:
        metrics.RUNNER_ATTACH_FAILURES.labels(reason).inc()
        # a flood is refused by the hundred: one warning per reason and interval, the rest debug
        level = logging.WARNING if self._refusal_log.allow(reason, self.clock()) else logging.DEBUG
        log.log(
            level,
            "runner attach refused (%s): %s",
            reason,
            details,
            extra={"peer": peer, "pod": str(claimed) if claimed else "", "reason": reason},
        )
        await context.abort(code, details)

    async def _current_session_answers(self, binding: RunnerBinding) -> bool:
        """The pod has a live session that answers a ping now (then a newer stream is refused:
        it may be a replayed token; see ``takeover``)."""
        previous = self._sessions.get(binding.pod.uid)
        if previous is None or previous.closed:
            return False
        within = takeover.probe_timeout(binding.heartbeat)
        if await takeover.still_answers(previous, within, self.clock):
            return True
        current = self._sessions.get(binding.pod.uid)  # another stream may have won meanwhile
        return current is not None and current is not previous and not current.closed

    def _check_reattach(self, binding: RunnerBinding, hello: pb.Hello) -> str:
        record = self._jobs.get(binding.pod.uid)
        if hello.state == pb.RUNNER_STATE_RUNNING:
            if binding.job_id and binding.job_id != hello.running_job.job_id:
                return (
                    f"pod {binding.pod} is labelled with job {binding.job_id}, but its runner"
                    f" claims job {hello.running_job.job_id}"
                )
            if record is not None and record.job_id != hello.running_job.job_id:
                return (
                    f"pod {binding.pod} runs job {hello.running_job.job_id}, but was assigned {record.job_id}"
                )
            if record is not None and record.state is JobState.ENDED:
                return f"job {record.job_id} has already ended ({record.outcome})"
        return ""

    async def _serve(self, binding: RunnerBinding, hello: pb.Hello, requests: Any, context: Any) -> None:
        uid = binding.pod.uid
        if await self._current_session_answers(binding):
            await self._refuse(
                context,
                takeover.DUPLICATE_SESSION,
                grpc.StatusCode.ALREADY_EXISTS,
                f"pod {binding.pod} is attached on a stream that answers; a second stream is refused",
                context.peer(),
                binding.pod,
            )
            return
        session = RunnerSession(uuid.uuid4().hex[:12], binding, hello, context, self.clock)
        previous = self._sessions.get(uid)
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer stream of the same pod")
        self._sessions[uid] = session
        self._cancel_timer(uid, kind="reattach")
        labels = (binding.deployment.namespace, binding.deployment.name)
        metrics.RUNNERS_ATTACHED.labels(*labels).inc()
        # grpc.aio cancels this coroutine when the runner's connection drops (a killed
        # process), so everything after the stream must happen in `finally`, without awaiting
        why = "connection to the runner lost"
        try:
            await session.send(
                pb.SupervisorMessage(
                    welcome=pb.Welcome(
                        session_id=session.session_id,
                        protocol_version=PROTOCOL_VERSION,
                        ping_interval_ms=int(binding.heartbeat.ping_interval * 1000),
                    )
                )
            )
            log.info(
                "runner attached (%s)",
                "running" if not session.idle else "idle",
                extra={
                    "pod": str(binding.pod),
                    "deployment": str(binding.deployment),
                    "session": session.session_id,
                },
            )
            await self._on_attached(session, hello)
            why = await session.serve(requests, self._on_message, self._on_unresponsive)
        except SessionClosed:
            why = "stream closed during attach"
        finally:
            metrics.RUNNERS_ATTACHED.labels(*labels).dec()
            if why.startswith("stream error"):
                metrics.RUNNER_ATTACH_FAILURES.labels("stream_error").inc()
            if self._sessions.get(uid) is session:
                del self._sessions[uid]
                self._on_detached(session, why)
        if session.close_code is not None:
            await context.abort(session.close_code, session.close_details)

    async def _on_attached(self, session: RunnerSession, hello: pb.Hello) -> None:
        uid = session.pod_uid
        record = self._jobs.get(uid)
        self._call(self.listener.runner_attached(session.binding, session.idle))
        if hello.state == pb.RUNNER_STATE_RUNNING:
            if record is None:
                await self._adopt(session, hello.running_job)
            elif record.state is JobState.ASSIGNED:
                # the StartJobResponse was lost with the old stream; the runner says it runs
                await self._mark_started(uid)
            log.info("runner re-attached with its running job", extra=self._fields(uid))
        elif record is not None:
            if record.state is JobState.ASSIGNED:
                await self._send_start(session, record)
            elif record.state is JobState.RUNNING:
                await self._end_job(
                    uid,
                    JobOutcome(OutcomeStatus.FAILED, "runner lost its job", "runner re-attached idle"),
                    terminate="runner restarted and lost its job",
                )

    async def _adopt(self, session: RunnerSession, running: pb.RunningJob) -> None:
        uid = session.pod_uid
        job = lk_agent.Job()
        with contextlib.suppress(Exception):
            job.ParseFromString(running.job)
        record = JobRecord(
            job_id=running.job_id,
            room=running.room_name or job.room.name,
            binding=session.binding,
            assigned_at=self.clock(),
            state=JobState.RUNNING,
            started_at=self.clock(),
            adopted=True,
        )
        self._jobs[uid] = record
        fut: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        fut.set_result(record)
        self._started[uid] = fut
        self._ended[uid] = asyncio.Event()
        log.info("adopted running job from re-attaching runner", extra=record.log_fields())
        self._call(self.listener.job_adopted(record))

    def _on_detached(self, session: RunnerSession, why: str) -> None:
        uid = session.pod_uid
        record = self._jobs.get(uid)
        fields = self._fields(uid) if record else {"pod": str(session.binding.pod)}
        log.info("runner stream ended: %s", why, extra=fields)
        self._call(self.listener.runner_detached(session.binding))
        if record is not None and record.state is not JobState.ENDED and uid in self._bindings:
            grace = self.settings.reattach_grace
            self._set_timer(uid, self._reattach_timeout(uid, grace, why), kind="reattach")

    # -- messages ----------------------------------------------------------------------------
    async def _on_message(self, session: RunnerSession, msg: pb.RunnerMessage) -> None:
        kind = msg.WhichOneof("message")
        uid = session.pod_uid
        if kind == "pong":
            self._on_pong(session, msg.pong)
        elif kind == "log":
            reemit(
                msg.log,
                self._fields(uid)
                if uid in self._jobs
                else {"pod": str(session.binding.pod), "deployment": str(session.binding.deployment)},
            )
        elif kind == "start_job_response":
            await self._on_start_response(session, msg.start_job_response)
        elif kind == "job_status":
            await self._on_job_status(session, msg.job_status)
        elif kind == "user_exit":
            if self._matches(session, msg.user_exit.job_id):
                reason = msg.user_exit.reason or "entrypoint finished"
                await self._end_job(uid, JobOutcome(OutcomeStatus.SUCCESS, reason))
        elif kind == "shutdown_response":
            if self._matches(session, msg.shutdown_response.job_id):
                await self._end_job(uid, JobOutcome(OutcomeStatus.SUCCESS, "shut down on request"))
        else:
            metrics.RUNNER_ATTACH_FAILURES.labels("protocol").inc()
            session.close(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected message {kind!r} after Hello")

    def _matches(self, session: RunnerSession, job_id: str) -> bool:
        record = self._jobs.get(session.pod_uid)
        if record is None or record.job_id != job_id:
            log.warning(
                "runner spoke of job %r, which is not its job",
                job_id,
                extra={"pod": str(session.binding.pod), "deployment": str(session.binding.deployment)},
            )
            return False
        return True

    def _on_pong(self, session: RunnerSession, pong: pb.Pong) -> None:
        report = session.monitor.pong_received(pong.ping_timestamp_us, self.clock())
        if report is None:
            return
        deployment = session.binding.deployment
        metrics.HEARTBEAT_RTT.labels(deployment.namespace, deployment.name).observe(report.rtt)
        if report.high:
            metrics.HEARTBEAT_HIGH_PINGS.labels(deployment.namespace, deployment.name).inc()
            fields = (
                self._fields(session.pod_uid)
                if session.pod_uid in self._jobs
                else {"pod": str(session.binding.pod), "deployment": str(deployment)}
            )
            log.warning(
                "high ping: runner answered in %.3fs", report.rtt, extra={**fields, "rtt": report.rtt}
            )

    async def _on_start_response(self, session: RunnerSession, resp: pb.StartJobResponse) -> None:
        uid = session.pod_uid
        if not self._matches(session, resp.job_id):
            return
        if resp.error:
            await self._end_job(
                uid,
                JobOutcome(OutcomeStatus.FAILED, "start failed", resp.error),
                terminate="job failed to start",
            )
            return
        await self._mark_started(uid)

    async def _mark_started(self, uid: str) -> None:
        record = self._jobs[uid]
        if record.state is not JobState.ASSIGNED:
            return
        record.state = JobState.RUNNING
        record.started_at = self.clock()
        self._cancel_timer(uid)
        metrics.JOB_START_LATENCY.labels(
            record.deployment.namespace, record.deployment.name, record.path
        ).observe(record.started_at - record.assigned_at)
        metrics.JOBS_STARTED.labels(record.deployment.namespace, record.deployment.name, record.path).inc()
        fut = self._started.get(uid)
        if fut is not None and not fut.done():
            fut.set_result(record)
        log.info("job started in %.3fs", record.started_at - record.assigned_at, extra=record.log_fields())
        self._call(self.listener.job_started(record))

    async def _on_job_status(self, session: RunnerSession, status: pb.JobStatus) -> None:
        if not self._matches(session, status.job_id):
            return
        if status.state == pb.JOB_STATE_FAILED:
            await self._end_job(
                session.pod_uid,
                JobOutcome(OutcomeStatus.FAILED, "entrypoint failed", status.error or "unknown error"),
                terminate="job failed",
            )
        else:
            log.debug("job status %s", pb.JobState.Name(status.state), extra=self._fields(session.pod_uid))

    async def _on_unresponsive(self, session: RunnerSession) -> None:
        uid = session.pod_uid
        silent = session.monitor.silent_for(self.clock())
        deployment = session.binding.deployment
        metrics.HEARTBEAT_TIMEOUTS.labels(deployment.namespace, deployment.name).inc()
        timeout = session.binding.heartbeat.ping_timeout
        reason = f"runner unresponsive: no pong for {silent:.1f}s (ping timeout {timeout}s)"
        record = self._jobs.get(uid)
        if record is not None and record.state is not JobState.ENDED:
            await self._end_job(
                uid, JobOutcome(OutcomeStatus.KILLED, "unresponsive", reason), terminate=reason
            )
        else:
            log.warning(
                "%s; deleting its pod",
                reason,
                extra={"pod": str(session.binding.pod), "deployment": str(deployment)},
            )
            self._call(self.terminator.terminate(session.binding.pod, reason))
        session.close(grpc.StatusCode.DEADLINE_EXCEEDED, reason)

    # -- job end -------------------------------------------------------------------------------
    async def _send_start(self, session: RunnerSession, record: JobRecord) -> None:
        request = self._requests.get(session.pod_uid)
        if request is None or session.start_sent:
            return  # at most once per stream: assign() and the attach path may both get here
        session.start_sent = True
        session.idle = False
        try:
            await session.send(pb.SupervisorMessage(start_job=request))
        except SessionClosed:
            log.info(
                "stream closed before StartJobRequest went out; will resend on re-attach",
                extra=record.log_fields(),
            )

    async def _start_timeout(self, uid: str, path: str) -> None:
        record = self._jobs[uid]
        timeout = record.binding.heartbeat.start_timeout
        await asyncio.sleep(timeout)
        if record.state is JobState.ASSIGNED:
            attached = "attached" if self.attached(uid) else "never attached"
            await self._end_job(
                uid,
                JobOutcome(
                    OutcomeStatus.FAILED,
                    "start timeout",
                    f"runner did not start the job within {timeout:.1f}s ({path} path, {attached})",
                ),
                terminate="start timeout",
            )

    async def _reattach_timeout(self, uid: str, grace: float, why: str) -> None:
        await asyncio.sleep(grace)
        record = self._jobs.get(uid)
        if record is not None and record.state is not JobState.ENDED and not self.attached(uid):
            await self._end_job(
                uid,
                JobOutcome(OutcomeStatus.FAILED, "runner lost", f"{why}; no re-attach within {grace:.1f}s"),
                terminate="runner stream lost",
            )

    async def _end_job(self, uid: str, outcome: JobOutcome, terminate: str | None = None) -> None:
        """The one place a job ends: exactly one outcome per job."""
        record = self._jobs.get(uid)
        if record is None or record.state is JobState.ENDED:
            return
        record.state = JobState.ENDED
        record.outcome = outcome
        self._cancel_timer(uid)
        self._cancel_timer(uid, kind="reattach")
        self._requests.pop(uid, None)
        fut = self._started.get(uid)
        if fut is not None and not fut.done():
            fut.set_exception(
                StartFailed(f"{outcome.reason}: {outcome.error}" if outcome.error else outcome.reason)
            )
            fut.exception()  # retrieved: nobody may be waiting
        self._ended[uid].set()
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
            session = self._sessions.get(uid)
            if session is not None and outcome.status is OutcomeStatus.KILLED:
                session.close(grpc.StatusCode.ABORTED, terminate)
        self._call(self.listener.job_ended(record, outcome))

    def _drop_job(self, uid: str) -> None:
        self._jobs.pop(uid, None)
        self._requests.pop(uid, None)
        self._started.pop(uid, None)
        self._ended.pop(uid, None)

    # -- helpers -------------------------------------------------------------------------------
    def _fields(self, uid: str) -> dict[str, str]:
        record = self._jobs.get(uid)
        if record is not None:
            return record.log_fields()
        binding = self._bindings.get(uid)
        return {"pod": str(binding.pod), "deployment": str(binding.deployment)} if binding else {}

    def _set_timer(self, uid: str, coro: Coroutine[Any, Any, None], kind: str = "start") -> None:
        key = f"{kind}:{uid}"
        self._cancel_timer(uid, kind)
        task = asyncio.create_task(coro, name=key)
        self._timers[key] = task
        task.add_done_callback(lambda t: self._timers.pop(key, None) if self._timers.get(key) is t else None)

    def _cancel_timer(self, uid: str, kind: str = "start") -> None:
        task = self._timers.pop(f"{kind}:{uid}", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _call(self, coro: Awaitable[Any]) -> None:
        """Run a listener/terminator call in the background; log its failure, never raise it."""
        self._tasks.spawn(coro)


class _Servicer(pb_grpc.RunnerSupervisorServicer):
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    # responses are written with context.write(), so this is a coroutine, not a generator
    async def Attach(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self._supervisor._attach(request_iterator, context)
