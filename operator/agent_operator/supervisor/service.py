"""The supervisor: a ``grpc.aio`` server for runner streams, and the jobs it starts on them.

Flow for one pod: the operator says it ``expect``s the pod (or a resolver vouches for it
after a restart), ``assign``s it a job, and the supervisor sends ``StartJobRequest`` as soon
as the pod's runner is attached. Everything about the pod lives in its slot (``slots``);
the job's state machine is ``job_machine``, which reports exactly one outcome per job to
the listener. This module holds the server, the attach handshake and the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

import agent_operator.supervisor.checkpoints as checkpoints
import agent_operator.supervisor.handshake as handshake
import agent_operator.supervisor.takeover as takeover
from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from agent_operator import metrics
from agent_operator.supervisor.admission import AttachGate, GuardedAuthenticator, LogThrottle
from agent_operator.supervisor.job_machine import JobMachine
from agent_operator.supervisor.job_machine import StartFailed as StartFailed
from agent_operator.supervisor.logbridge import reemit
from agent_operator.supervisor.session import RunnerSession, SessionClosed
from agent_operator.supervisor.settings import SupervisorSettings
from agent_operator.supervisor.slots import PodSlot, Slots
from agent_operator.supervisor.types import (
    DEATH_POD_DELETED,
    DEATH_UNRESPONSIVE,
    Authenticator,
    JobOutcome,
    JobRecord,
    JobState,
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
        self._stopping = False
        self._slots = Slots()
        self._tasks = BackgroundTasks(log, "supervisor callback")
        self._handshake = handshake.Context(
            hello_timeout=self.settings.hello_timeout,
            authenticator=self.authenticator,
            resolver=resolver,
            binding_of=lambda uid: slot.binding if (slot := self._slots.get(uid)) is not None else None,
            bind=self._slots.bind,
            job_of=self.job,
        )
        self._machine = JobMachine(self.listener, terminator, self.settings.reattach_grace, clock, self._call)

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
        self._stopping = True  # the streams it closes are no runner's death
        for slot in self._slots:
            if slot.session is not None:
                slot.session.close(grpc.StatusCode.UNAVAILABLE, "supervisor stopping")
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        for slot in self._slots:
            await slot.close_timers()
        await self._tasks.close()

    # -- what the operator tells us ---------------------------------------------------------
    def expect(self, binding: RunnerBinding) -> None:
        """A pod whose runner may attach (created by, or adopted into, the operator)."""
        self._slots.bind(binding)

    async def forget(self, pod_uid: str) -> None:
        """The pod is gone: a job it still had ends now (failed: nothing else would end it,
        its timers go with the pod; unless its runner had shut down on the deletion's SIGTERM,
        which stands), then its slot is dropped and its stream closed."""
        slot = self._slots.get(pod_uid)
        if slot is None:
            return
        # deleted under a running job by someone else (an eviction, a node lost): its death,
        # even when its runner shut down cleanly on the kubelet's SIGTERM
        running = slot.job is not None and slot.job.state is JobState.RUNNING and not slot.shutdown_asked
        death = DEATH_POD_DELETED if running else ""
        gone = JobOutcome(OutcomeStatus.FAILED, "pod deleted", "the pod was deleted before its job ended")
        await self._machine.end(slot, dataclasses.replace(slot.held or gone, death=death))
        self._slots.drop(pod_uid)
        await slot.close_timers()
        if slot.session is not None:
            slot.session.close(grpc.StatusCode.NOT_FOUND, "pod removed")

    def job(self, pod_uid: str) -> JobRecord | None:
        slot = self._slots.get(pod_uid)
        return slot.job if slot is not None else None

    def jobs(self) -> list[JobRecord]:
        return [slot.job for slot in self._slots if slot.job is not None]

    def attached(self, pod_uid: str) -> bool:
        slot = self._slots.get(pod_uid)
        return slot is not None and slot.attached

    def idle_runners(self) -> list[RunnerBinding]:
        """Attached runners with no job."""
        return [
            slot.binding
            for slot in self._slots
            if slot.session is not None and not slot.session.closed and slot.session.idle and slot.job is None
        ]

    async def assign(self, pod_uid: str, request: pb.StartJobRequest, path: str = "") -> JobRecord:
        """Give the pod its job; StartJobRequest goes out as soon as its runner is attached.

        ``path`` labels the start in the metrics; by default "warm" when the runner is attached
        and idle, else "cold"."""
        slot = self._slots.get(pod_uid)
        if slot is None:
            raise StartFailed(f"pod {pod_uid} is not expected by this supervisor")
        return await self._machine.assign(slot, request, path)

    async def unit_exited(self, pod_uid: str, detail: str, succeeded: bool = False) -> None:
        """The pod's container ended: its job ends now, not at the start timeout or the re-attach
        grace (a bad image, a crash at import, a runner killed with its job running)."""
        slot = self._slots.get(pod_uid)
        if slot is not None:
            await self._machine.unit_exited(slot, detail, succeeded)

    async def pod_failed(self, pod_uid: str, reason: str, message: str) -> None:
        """The pod's status says its job cannot go on (a container OOM-killed, an image that
        cannot be pulled, no node for the pod): its job fails now with that reason, whether it
        started or not, and the pod is removed."""
        slot = self._slots.get(pod_uid)
        if slot is not None:
            await self._machine.pod_failed(slot, reason, message)

    async def wait_started(self, pod_uid: str) -> JobRecord:
        """Wait for the runner's StartJobResponse; raises StartFailed if the job failed to start."""
        slot = self._slots.get(pod_uid)
        if slot is None or slot.started is None:
            raise StartFailed(f"no job assigned to pod {pod_uid}")
        return await asyncio.shield(slot.started)

    async def wait_ended(self, pod_uid: str) -> JobOutcome | None:
        slot = self._slots.get(pod_uid)
        if slot is None or slot.ended is None or slot.job is None:
            return None
        record = slot.job
        await slot.ended.wait()
        return record.outcome

    async def shutdown_job(self, pod_uid: str, reason: str, grace: float) -> JobOutcome | None:
        """Ask the runner to end its job within ``grace``; kill its unit if it does not."""
        slot = self._slots.get(pod_uid)
        if slot is None:
            return None
        return await self._machine.shutdown(slot, reason, grace)

    # -- attach ------------------------------------------------------------------------------
    async def _attach(self, requests: AsyncIterator[pb.RunnerMessage], context: Any) -> None:
        peer = context.peer()
        hs = handshake.Handshake(requests, peer)
        with self.gate.admitting(peer) as admission:  # a pending slot until attached or refused
            if admission is not None:
                reason, details = admission
                await self._refuse(context, reason, grpc.StatusCode.RESOURCE_EXHAUSTED, details, peer)
                return
            refusal = await handshake.run(self._handshake, hs)
        if refusal is not None:
            await self._refuse(context, refusal.reason, refusal.code, refusal.details, peer, hs.claimed)
            return
        assert hs.binding is not None
        assert hs.hello is not None
        await self._serve(hs.binding, hs.hello, requests, context)

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

    async def _serve(self, binding: RunnerBinding, hello: pb.Hello, requests: Any, context: Any) -> None:
        slot = self._slots.bind(binding)
        if await takeover.current_session_answers(slot, self.clock):
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
        previous = slot.session
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer stream of the same pod")
        slot.session = session
        slot.cancel_timer("reattach")
        labels = (binding.deployment.namespace, binding.deployment.name)
        metrics.RUNNERS_ATTACHED.labels(*labels).inc()
        # grpc.aio cancels this coroutine when the runner's connection drops (a killed
        # process), so everything after the stream must happen in `finally`, without awaiting
        why = "connection to the runner lost"
        peer = context.peer()
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
                pb.RunnerState.Name(hello.state).removeprefix("RUNNER_STATE_").lower(),
                extra={
                    "pod": str(binding.pod),
                    "deployment": str(binding.deployment),
                    "session": session.session_id,
                },
            )
            await self._on_attached(slot, session, hello)
            why = await session.serve(requests, self._on_message, self._on_unresponsive)
        except SessionClosed:
            why = "stream closed during attach"
        finally:
            metrics.RUNNERS_ATTACHED.labels(*labels).dec()
            if why.startswith("stream error"):
                metrics.RUNNER_ATTACH_FAILURES.labels("stream_error").inc()
            if slot.session is session:
                slot.session = None
                self._on_detached(slot, session, why, peer)
        if session.close_code is not None:
            await context.abort(session.close_code, session.close_details)

    async def _on_attached(self, slot: PodSlot, session: RunnerSession, hello: pb.Hello) -> None:
        if not session.prewarm_error:  # else the machine reports the failure
            self._call(self.listener.runner_attached(session.binding, session.idle))
        await self._machine.attached(slot, session, hello)

    def _on_detached(self, slot: PodSlot, session: RunnerSession, why: str, peer: str) -> None:
        log.info("runner stream ended: %s", why, extra=slot.fields())
        self._call(self.listener.runner_detached(session.binding))
        if self._slots.get(slot.uid) is slot and not self._stopping:  # its runner may return
            # not closed by us: its runner ended it or its connection broke. A SIGKILLed runner's
            # stream reads as ended by it ("runner closed the stream"), as when a live runner
            # attaches again, which it does within a fraction of a second
            dropped = session.close_code is None
            if dropped:
                self.gate.drops.dropped(self.clock())
            self._machine.detached(slot, why, dropped, lambda: self.gate.may_return(peer, self.clock()))

    # -- messages ----------------------------------------------------------------------------
    async def _on_message(self, session: RunnerSession, msg: pb.RunnerMessage) -> None:
        kind = msg.WhichOneof("message")
        slot = self._slots.get(session.pod_uid)
        if kind == "pong":
            self._on_pong(session, msg.pong)
        elif kind == "log":
            reemit(msg.log, slot.fields() if slot is not None else self._session_fields(session))
        elif kind in ("start_job_response", "job_status", "user_exit", "shutdown_response"):
            if slot is not None:
                await self._machine.message(slot, session, kind, msg)
        elif kind == "checkpoint":
            if slot is not None:
                checkpoints.take(slot, msg.checkpoint, self.listener, self._call)
        else:
            metrics.RUNNER_ATTACH_FAILURES.labels("protocol").inc()
            session.close(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected message {kind!r} after Hello")

    @staticmethod
    def _session_fields(session: RunnerSession) -> dict[str, str]:
        return {"pod": str(session.binding.pod), "deployment": str(session.binding.deployment)}

    def _on_pong(self, session: RunnerSession, pong: pb.Pong) -> None:
        report = session.monitor.pong_received(pong.ping_timestamp_us, self.clock())
        if report is None:
            return
        deployment = session.binding.deployment
        metrics.HEARTBEAT_RTT.labels(deployment.namespace, deployment.name).observe(report.rtt)
        if report.high:
            metrics.HEARTBEAT_HIGH_PINGS.labels(deployment.namespace, deployment.name).inc()
            slot = self._slots.get(session.pod_uid)
            fields = slot.fields() if slot is not None else self._session_fields(session)
            log.warning(
                "high ping: runner answered in %.3fs", report.rtt, extra={**fields, "rtt": report.rtt}
            )

    async def _on_unresponsive(self, session: RunnerSession) -> None:
        uid = session.pod_uid
        silent = session.monitor.silent_for(self.clock())
        deployment = session.binding.deployment
        metrics.HEARTBEAT_TIMEOUTS.labels(deployment.namespace, deployment.name).inc()
        timeout = session.binding.heartbeat.ping_timeout
        reason = f"runner unresponsive: no pong for {silent:.1f}s (ping timeout {timeout}s)"
        slot = self._slots.get(uid)
        record = slot.job if slot is not None else None
        if slot is not None and record is not None and record.state is not JobState.ENDED:
            death = DEATH_UNRESPONSIVE if record.state is JobState.RUNNING else ""
            outcome = JobOutcome(OutcomeStatus.KILLED, "unresponsive", reason, death=death)
            await self._machine.end(slot, outcome, terminate=reason)
        else:
            log.warning(
                "%s; deleting its pod",
                reason,
                extra={"pod": str(session.binding.pod), "deployment": str(deployment)},
            )
            self._call(self.terminator.terminate(session.binding.pod, reason))
        session.close(grpc.StatusCode.DEADLINE_EXCEEDED, reason)

    # -- helpers -------------------------------------------------------------------------------
    def _call(self, coro: Awaitable[Any]) -> None:
        """Run a listener/terminator call in the background; log its failure, never raise it."""
        self._tasks.spawn(coro)


class _Servicer(pb_grpc.RunnerSupervisorServicer):
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    # responses are written with context.write(), so this is a coroutine, not a generator
    async def Attach(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await self._supervisor._attach(request_iterator, context)
