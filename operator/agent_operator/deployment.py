"""One AgentDeployment at run time: its LiveKit worker, its jobs and their pods.

It answers LiveKit (availability from capacity, assignment -> pod -> runner), hears from
the supervisor how each job went, and keeps the resource's status and Events. Each job is
one record in ``self.jobs`` (see ``jobs``); its collaborators are passed in
(``collaborators``). Registration, adoption after a restart, drain and whether it can
serve (``readiness``, whence its conditions) live in their own modules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit.protocol import agent

from agent_jobrunner.protocol import pb
from agent_operator import decisions, metrics
from agent_operator.adoption import Adoption, AdoptionContext
from agent_operator.collaborators import Collaborators
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.drain import drain, refuse_assignment
from agent_operator.failover import Failover, FailoverContext, lost_after
from agent_operator.handover import pass_on
from agent_operator.job_ends import JobEnds
from agent_operator.jobs import Job, JobTable, Phase
from agent_operator.kube.podspec import Owner
from agent_operator.kube.status import Condition
from agent_operator.offers import accepted, participant
from agent_operator.placement import Placement, PlacementContext
from agent_operator.readiness import Readiness
from agent_operator.registration import Registration
from agent_operator.spec import DEFAULT_TARGET_LOAD, DeploymentSpec
from agent_operator.status_report import Changes, StatusSnapshot, report_status
from agent_operator.supervisor import JobOutcome, JobRecord, RunnerBinding
from agent_operator.tasks import BackgroundTasks, first_of, run_with_companions, unless
from agent_operator.vocabulary import DeploymentRef, HeartbeatSettings, PodIdentity
from agent_operator.warm_pool import PoolDemand, WarmPool

log = logging.getLogger("agent_operator.deployment")

RESERVATION_SECONDS = 15.0  # an accepted job whose assignment never came frees its slot


class DeploymentRuntime:
    def __init__(
        self, services: Collaborators, owner: Owner, spec: DeploymentSpec | None, generation: int
    ) -> None:
        self.services = services
        self.owner = owner
        self.ref = DeploymentRef(owner.namespace, owner.name)
        self.spec = spec
        self.generation = generation
        self.fields = {"deployment": str(self.ref)}
        self.jobs = JobTable()
        self.draining = False
        self.drain_result: bool | None = None  # True: drained, pods gone; False: some were left
        self.finished = asyncio.Event()  # run() is over (drained or not)
        self.status_writer = services.status_writer(owner)
        self._changed = asyncio.Event()
        self._dirty = Changes()
        self._tasks = BackgroundTasks(log, "background call", self.fields)
        self._labels = (owner.namespace, owner.name)
        self.readiness = Readiness(self.fields, self._labels, self.event, self.mark_dirty)
        ready = self.readiness
        self.registration = Registration(
            owner, services.read_credentials, self, self.fields, ready.block, ready.unblock_credentials
        )
        # signs the pods this deployment makes and checks the ones it finds (kube.pod_trust)
        self.trust = DeploymentTrust(owner, self.fields, self.event, lambda: self.registration.credentials)
        self.pool = WarmPool(
            owner,
            services.pods,
            services.runner_settings,
            demand=self._pool_demand,
            expect=self.expect,
            changed=self.mark_dirty,
            fields=self.fields,
            trust=self.trust,
            event=self.event,
        )
        self.ends = JobEnds(
            self.jobs,
            services.pods,
            lambda: self.registration.worker,
            self.event,
            self._freed,
            self.fields,
            self._labels,
        )
        self.adoption = Adoption(
            AdoptionContext(
                owner=owner,
                fields=self.fields,
                jobs=self.jobs,
                pool=self.pool,
                ends=self.ends,
                spec=lambda: self.spec,
                heartbeat=self.heartbeat,
                expect=self.expect,
                credentials=lambda: self.registration.credentials,
                credentials_ready=self.registration.credentials_ready,
                changed=self.mark_dirty,
                spawn=self._tasks.spawn,
                event=self.event,
                trust=self.trust,
                restart=lambda entry, outcome: self.failover.handle(entry, outcome),
            ),
            services,
        )
        self.placement = Placement(
            PlacementContext(
                name=owner.name,
                fields=self.fields,
                labels=self._labels,
                jobs=self.jobs,
                pool=self.pool,
                ends=self.ends,
                trust=self.trust,
                expect=self.expect,
                event=self.event,
                changed=self._dirty.set,
            ),
            services,
        )
        self.failover = Failover(
            FailoverContext(
                fields=self.fields,
                labels=self._labels,
                spec=lambda: self.spec,
                credentials=lambda: self.registration.credentials,
                draining=lambda: self.draining,
                pods=services.pods,
                placement=self.placement,
                jobs=self.jobs,
                trust=self.trust,
                event=self.event,
            )
        )

    @property
    def worker_id(self) -> str:
        worker = self.registration.worker
        return worker.worker_id if worker is not None else ""

    def mark_dirty(self) -> None:
        self._dirty.set()

    def _freed(self) -> None:
        self._dirty.set()
        self.pool.wake()

    def heartbeat(self) -> HeartbeatSettings:
        return self.spec.heartbeat if self.spec else self.services.default_heartbeat

    def expect(self, pod: PodIdentity, heartbeat: HeartbeatSettings, job_id: str = "") -> None:
        """A pod of ours whose runner may attach."""
        self.services.supervisor.expect(self.binding(pod, heartbeat, job_id))

    def binding(self, pod: PodIdentity, heartbeat: HeartbeatSettings, job_id: str = "") -> RunnerBinding:
        """What the supervisor is told of a pod of ours (failover on: a dropped runner is judged soon)."""
        return RunnerBinding(pod, self.ref, heartbeat, job_id=job_id, lost_after=lost_after(self.spec))

    # -- lifecycle ----------------------------------------------------------------------------
    def update(self, spec: DeploymentSpec | None, generation: int, error: str = "") -> None:
        """A new generation of the resource (from the watch)."""
        if generation == self.generation and spec == self.spec and error == self.readiness.invalid_spec:
            return
        self.spec, self.generation = spec, generation
        self.readiness.spec_checked(error)
        self._changed.set()
        self._dirty.set()
        self.pool.wake()

    async def run(
        self,
        stopping: asyncio.Event,
        deleted: Callable[[], float | None],
        exiting: asyncio.Event | None = None,
    ) -> None:
        """Serve until ``stopping``; then drain if the resource was deleted (``deleted``: when,
        as a wall-clock time; None while it exists). The worker stays registered through the
        drain, so LiveKit hears how the last jobs end. ``exiting`` (the operator stops) cuts a
        drain short and leaves its pods as they are: the next operator takes it up
        (``drain_result`` stays None)."""
        metrics.init_deployment(*self._labels)
        await self.adoption.adopt_existing_pods()
        # the status writer and the pool run beside the registration; one that dies ends this
        # run with CompanionStopped (logged), and kopf restarts the daemon, which re-adopts
        companions = {
            "status writer": report_status(self.status_writer, self._dirty, self._snapshot, self.fields),
            "warm pool loop": self.pool.run(),
        }
        try:
            await run_with_companions(self._serve(stopping, deleted, exiting), companions, log, self.fields)
        finally:
            await self.placement.close()
            await self.failover.close()
            await self.registration.stop()
            await self._tasks.close()
            await self.registration.close()
            if self.drain_result is not None:
                metrics.forget_deployment(*self._labels)

    async def _serve(
        self, stopping: asyncio.Event, deleted: Callable[[], float | None], exiting: asyncio.Event | None
    ) -> None:
        unregister = asyncio.Event()  # the worker goes once serving and any drain are over
        registering = asyncio.create_task(
            self.registration.run(
                lambda: self.spec,
                lambda: bool(self.readiness.invalid_spec),
                self._changed,
                unregister,
                self.mark_dirty,
            ),
            name=f"registration {self.ref}",
        )
        try:
            await first_of(stopping, registering)
            deleted_at = deleted()
            if deleted_at is not None:
                self.draining = True
                self._dirty.set()
                self.drain_result = await unless(self._drain(deleted_at), exiting)
        finally:
            unregister.set()
            self.finished.set()
            await asyncio.gather(registering, return_exceptions=True)

    async def _drain(self, deleted_at: float) -> bool:
        timeout = self.spec.drain_timeout if self.spec else 0.0
        worker = self.registration.worker
        return await drain(
            self.owner,
            deleted_at + timeout - time.time(),
            self.jobs,
            worker.send_status if worker is not None else None,
            self.services,
            self.event,
            self.fields,
        )

    # -- capacity -----------------------------------------------------------------------------
    def capacity(self) -> decisions.Capacity:
        return decisions.Capacity(
            max_jobs=self.spec.max_concurrent_jobs if self.spec else 0,
            running=self.jobs.busy,
            reserved=self.jobs.offered,
            registered=bool(self.worker_id),
            draining=self.draining,
            target_load=self.spec.target_load if self.spec else DEFAULT_TARGET_LOAD,
            blocked_reason=self.readiness.blocked,
        )

    def _pool_demand(self) -> PoolDemand:
        serving = not self.draining and not self.readiness.invalid_spec
        return PoolDemand.of(self.spec, self.jobs, serving, self.services.handover.active)

    # -- WorkerHandler: what LiveKit asks ------------------------------------------------------
    def availability(self, request: agent.AvailabilityRequest) -> agent.AvailabilityResponse | None:
        job = request.job
        known = self.jobs.get(job.id)
        if known is not None and known.phase is not Phase.OFFERED:  # we run it (after a reconnect)
            return agent.AvailabilityResponse(job_id=job.id, available=False)
        worker = self.registration.worker
        if self.services.handover.active and worker is not None:
            take = functools.partial(self._answer, job)  # when no successor serves in time
            self._tasks.spawn(
                pass_on(self.services.handover, worker.answer, job, self.fields, self._labels, take)
            )
            return None  # answered by pass_on
        return self._answer(job)

    def _answer(self, job: agent.Job) -> agent.AvailabilityResponse:
        """The answer to an offer from this deployment's capacity."""
        verdict = decisions.availability(self.capacity())
        metrics.AVAILABILITY_ANSWERS.labels(
            *self._labels, "yes" if verdict.accept else "no", verdict.reason
        ).inc()
        fields = {**self.fields, "job_id": job.id, "room": job.room.name}
        if not verdict.accept or self.spec is None:
            log.info("declined job (%s)", verdict.reason, extra=fields)
            return agent.AvailabilityResponse(job_id=job.id, available=False)
        spec = self.spec
        identity, name = participant(spec, job, self.owner.name)
        self.jobs.offer(job.id, job.room.name, identity, name, RESERVATION_SECONDS)
        log.info("accepted job", extra=fields)
        return accepted(spec, job.id, identity, name)

    async def assignment(self, assignment: agent.JobAssignment) -> None:
        job = assignment.job
        fields = {**self.fields, "job_id": job.id, "room": job.room.name}
        spec = self.spec
        known = self.jobs.get(job.id)
        if spec is None or (known is not None and known.phase is not Phase.OFFERED):
            log.warning("ignored assignment of a job already running here", extra=fields)
            return
        if self.draining:
            await refuse_assignment(job.id, known, self.jobs, self.registration.worker, self._labels, fields)
            self._dirty.set()
            return
        self.placement.assign(assignment, spec)

    async def termination(self, termination: agent.JobTermination) -> None:
        await self.placement.termination(termination)

    async def registered(self, worker_id: str) -> None:
        self.readiness.registered(worker_id)

    async def disconnected(self, reason: str) -> None:
        self.readiness.disconnected(reason)

    def status(self) -> agent.UpdateWorkerStatus:
        return decisions.worker_status(self.capacity())

    def running_job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs.with_pod]

    # -- what the supervisor and the pod watch tell us -------------------------------------------
    def runner_attached(self, pod: PodIdentity, idle: bool) -> None:
        self.pool.attached(pod.uid, idle)
        self.adoption.runner_attached(pod, idle)
        self._dirty.set()

    def runner_detached(self, pod: PodIdentity) -> None:
        self.pool.detached(pod.uid)
        self._dirty.set()

    async def job_started(self, record: JobRecord) -> None:
        entry = self.jobs.get(record.job_id)
        if entry is not None and entry.phase is Phase.STARTING:
            entry.phase = Phase.RUNNING
        self.ends.started(record, entry)
        self._dirty.set()

    async def job_adopted(self, record: JobRecord) -> None:
        self.pool.gone(record.pod.uid)  # labelled idle, but its runner has a job
        entry = self.jobs.get(record.job_id)
        if entry is None:
            entry = self.jobs.adopt(Job(record.job_id, record.room, Phase.RUNNING, adopted=True))
        entry.phase = Phase.RUNNING if entry.phase not in (Phase.ENDING, Phase.ENDED) else entry.phase
        entry.pod = record.pod
        log.info("re-adopted a running job", extra=record.log_fields())
        self.event("JobAdopted", f"job {record.job_id} in pod {record.pod.name} re-attached and goes on")
        self._dirty.set()

    async def job_ended(self, record: JobRecord, outcome: JobOutcome) -> None:
        entry = self.jobs.get(record.job_id)
        if entry is None or entry.pod != record.pod:  # not (or no longer) ours: just count it
            entry = Job(record.job_id, record.room, Phase.RUNNING, pod=record.pod)
            self.jobs.adopt(entry)
        elif outcome.death:
            ending = await self.failover.handle(entry, outcome)
            if ending is None:
                return  # restarting on a new pod
            outcome = ending
        await self.ends.finish(entry, outcome)

    def job_checkpoint(self, record: JobRecord, checkpoint: pb.Checkpoint) -> None:
        if self.jobs.checkpoint(record.job_id, record.pod, checkpoint):
            self.failover.keep(record.pod, checkpoint)  # on its pod too (an operator restart)

    async def pod_gone(self, pod: PodIdentity, final: dict[str, Any] | None, deleted: bool = True) -> None:
        """The pod was deleted (or, ``final`` terminal, finished); not ``deleted``: it is still
        listed live (its delete failed), and keeps counting against the cap."""
        if deleted:
            self.pool.gone(pod.uid)
            self.ends.pod_gone(pod.uid)
        self.trust.forget(pod)
        self.failover.pod_gone(pod, final)
        await self.adoption.pod_gone(pod, final)

    # -- status -------------------------------------------------------------------------------
    def _snapshot(self) -> StatusSnapshot:
        return StatusSnapshot(
            generation=self.generation,
            conditions=self.conditions(),
            worker_id=self.worker_id,
            active_jobs=self.jobs.busy,
            idle_pods=self.pool.ready,
            busy_pods=len(self.jobs.with_pod),
            max_jobs=self.spec.max_concurrent_jobs if self.spec else 0,
            counts=dict(self.ends.counts),
            labels=self._labels,
        )

    def conditions(self) -> list[Condition]:
        return self.readiness.conditions(
            self.worker_id, self.draining, tuple(self.ends.recent), self.pool.failure
        )

    # -- helpers ------------------------------------------------------------------------------
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self._tasks.spawn(self.services.events.record(self.owner, reason, message, warning))
