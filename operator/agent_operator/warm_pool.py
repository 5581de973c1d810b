"""A deployment's warm pool at run time: idle runner pods kept attached, refilled off the
critical path, and the one call that places a job on a pod (``place``: the pool decides
warm or cold). The plan itself is pure (``pool_plan``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import secrets
import time
from collections.abc import Callable

from agent_operator import metrics
from agent_operator.collaborators import Pods
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.jobs import JobTable
from agent_operator.kube.pods import brief
from agent_operator.kube.podspec import JobInfo, Owner, RunnerSettings, build_runner_pod
from agent_operator.pool_backoff import PoolBackoff, PoolFailure
from agent_operator.pool_plan import PoolPod, desired_idle, pick_idle, plan_pool, refill_waits
from agent_operator.spec import DeploymentSpec
from agent_operator.templates import pod_name
from agent_operator.vocabulary import HeartbeatSettings, PodIdentity

log = logging.getLogger("agent_operator.pool")
TICK_SECONDS = 1.0
YIELD_TICK_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class PoolDemand:
    """What the deployment wants of its pool right now."""

    spec: DeploymentSpec | None
    busy: int  # jobs that hold a pod or are getting one (each holds at most one)
    serving: bool  # False: draining, or the spec cannot be served (the pool empties)
    paused: bool = False  # handing over: the next operator adopts the pool as it is
    waiting: int = 0  # of the busy, jobs being placed with no pod yet: they take idle ones first
    starting: int = 0  # of the busy, jobs on a pod whose runner has not started them yet

    @classmethod
    def of(cls, spec: DeploymentSpec | None, jobs: JobTable, serving: bool, paused: bool) -> PoolDemand:
        return cls(spec, jobs.busy, serving, paused, jobs.waiting_for_pod, jobs.starting)


class NoRoomForPod(Exception):
    """A job found no pool pod, and a new pod would exceed maxConcurrentJobs until its start
    timeout passed."""


@dataclasses.dataclass(frozen=True)
class Placement:
    pod: PodIdentity
    path: str  # "warm": an attached idle runner; "cold": a pod that is still starting


class WarmPool:
    def __init__(
        self,
        owner: Owner,
        pods: Pods,
        runner_settings: RunnerSettings,
        demand: Callable[[], PoolDemand],
        expect: Callable[[PodIdentity, HeartbeatSettings], None],
        changed: Callable[[], None],
        fields: dict[str, str],
        trust: DeploymentTrust,
        event: Callable[[str, str, bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self._trust = trust
        self._pods = pods
        self._runner_settings = runner_settings
        self._demand = demand
        self._expect = expect
        self._changed = changed
        self.fields = fields
        self._clock = clock
        self._event = event
        self._backoff = PoolBackoff()
        self.pods: dict[str, PoolPod] = {}
        self._creating = 0  # pool pods being created right now
        self._yielding_since: float | None = None  # new pool pods waiting for jobs starting
        self._refill_held = False  # they wait right now (``refill_waits``)
        self._pool_changed = asyncio.Event()  # a pod created, attached, deleted or gone; room freed
        self._wake = asyncio.Event()

    # -- placement: the one way a job gets a pod -----------------------------------------------
    async def place(
        self,
        spec: DeploymentSpec,
        info: JobInfo,
        fields: dict[str, str],
        hold: Callable[[PodIdentity], None],
    ) -> tuple[Placement, bool]:
        """A pod for the job: an idle pool pod (attached first, else one still starting),
        else a new pod. It waits rather than make one pod too many: for a pool pod being
        created (it is this job's), or, while a new pod would exceed maxConcurrentJobs (pool
        pods not attached here yet, or whose delete has not landed, still count), for room,
        up to the start timeout (then ``NoRoomForPod``). ``hold`` gets the pod the moment it
        is the job's, before anything else runs. Returns the placement and whether the pod
        came from the pool."""
        template_hash = spec.template_hash()
        deadline = self._clock() + spec.heartbeat.start_timeout
        expired = False
        while True:
            self._pool_changed.clear()
            pod = self.take(template_hash)
            if pod is not None:
                identity = PodIdentity(pod.namespace, pod.name, pod.uid)
                hold(identity)
                return Placement(identity, "warm" if pod.attached else "cold"), True
            if (expired or not self._creating) and self.room(spec, for_job=True):
                break
            if expired:
                raise NoRoomForPod(
                    f"no pod within the start timeout: {self._counted()} pods would be live with "
                    f"maxConcurrentJobs {spec.max_concurrent_jobs}"
                )
            try:
                await asyncio.wait_for(self._pool_changed.wait(), max(0.0, deadline - self._clock()))
            except TimeoutError:
                expired = True
        name = pod_name(self.owner.name, info.job_id, secrets.token_hex(2))
        body = self._trust.seal(build_runner_pod(self.owner, spec, self._runner_settings, name, info))
        # a job may start as late as its start timeout: ride out an API server blip
        created = await self._pods.create(body, retry_for=spec.heartbeat.start_timeout, log_fields=fields)
        hold(created)
        return Placement(created, "cold"), False

    def _counted(self) -> int:
        """The pods that count against maxConcurrentJobs: the pool's (idle, starting, not
        attached here yet, or deleting until the delete call returned: the API server lists
        it live until then), the pool's being created, and one per job holding a pod or
        getting one (a job placed cold has its own slot for its pod)."""
        pool = sum(1 for p in self.pods.values() if not p.deleted)
        return pool + self._creating + self._demand().busy

    def room(self, spec: DeploymentSpec, for_job: bool = False) -> bool:
        """The one check before any pod is created: may one more exist? A job being placed
        is counted already (its slot is its pod's); the pool's new pod is one more."""
        return self._counted() + (0 if for_job else 1) <= spec.max_concurrent_jobs

    def take(self, template_hash: str) -> PoolPod | None:
        """A pod for a job, removed from the pool (a pod is never reused)."""
        pod = pick_idle(list(self.pods.values()), template_hash)
        if pod is not None:
            del self.pods[pod.uid]
            self._update_gauge()
            self.wake()
        return pod

    # -- what happens to pool pods -----------------------------------------------------------
    def adopt(self, identity: PodIdentity, template_hash: str, created: str | None) -> None:
        """An idle pod found at start (the pool survives an operator restart): its idle age
        counts from its creation, its attach window from now."""
        now = self._clock()
        age = 0.0
        if created:
            born = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            age = max(0.0, (datetime.datetime.now(datetime.UTC) - born).total_seconds())
        self.pods[identity.uid] = PoolPod(
            identity.uid,
            identity.name,
            identity.namespace,
            template_hash,
            now - age,
            expected_at=now,
            adopted=True,
        )

    def attached(self, uid: str, idle: bool = True) -> None:
        """Its runner attached, prewarmed (a failed prewarm is ``failed``); not ``idle``: it
        has a job, so the pod is not the pool's (labelled idle still: its busy label, which
        waits for the join, had not landed when the operator before this one stopped)."""
        if not idle:
            self.gone(uid)
            return
        pod = self.pods.get(uid)
        if pod is not None:
            self._backoff.succeeded()
            pod.attached = pod.attached_once = True
            pod.detached_at = None
            self._update_gauge()
            self._pool_changed.set()
            self.wake()

    def detached(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            pod.attached = False
            pod.detached_at = self._clock()
            self._update_gauge()

    def gone(self, uid: str) -> None:
        if self.pods.pop(uid, None) is not None:
            self._update_gauge()
            self._pool_changed.set()
            self.wake()

    async def failed(self, uid: str, reason: str, message: str) -> None:
        """A pool pod that will never serve (its agent's prewarm failed, its image cannot be
        pulled, no node takes it): not idle, deleted, an Event saying why, and the next pool pod
        waits (``pool_backoff``). A pod not in the pool (a job's) is left to its job's end."""
        pod = self.pods.get(uid)
        if pod is None or pod.deleting:
            return  # a job pod, or already being replaced (its status says it again)
        self._fail(pod, reason, message)
        await self._pods.delete(PodIdentity(pod.namespace, pod.name, pod.uid))

    def _fail(self, pod: PoolPod, reason: str, message: str) -> None:
        pod.deleting = True
        pod.attached = False
        failure = self._backoff.failed(self._clock(), reason, message)
        metrics.POOL_POD_FAILURES.labels(self.owner.namespace, self.owner.name, reason).inc()
        said = (
            f"pool pod {pod.name}: {reason}: {failure.message}; replaced in {failure.delay:.0f}s "
            f"({failure.in_a_row} failed in a row)"
        )
        log.warning("%s", said, extra={**self.fields, "pod": pod.name, "reason": reason})
        self._event("PoolPodFailed", said, True)
        self._update_gauge()
        self._changed()

    @property
    def failure(self) -> PoolFailure | None:
        """The last failure of a pool pod, while no pool pod has attached since (and a pool is
        wanted: scaled to 0, there is no pool to be degraded)."""
        spec = self._demand().spec
        return self._backoff.last if spec is not None and spec.warm_pool_size > 0 else None

    @property
    def ready(self) -> int:
        return sum(1 for p in self.pods.values() if p.attached and not p.deleting)

    def wake(self) -> None:
        """Something changed (a slot freed, the spec): reconcile soon, and the placements
        waiting for room look again."""
        self._wake.set()
        self._pool_changed.set()

    # -- reconcile ---------------------------------------------------------------------------
    async def run(self) -> None:
        failing = ""  # the same failure every tick (the API server away) is logged once
        while True:
            try:
                await self.reconcile()
            except Exception as exc:
                why = brief(exc)
                if why != failing:
                    log.warning("pool reconcile failed: %s", why, extra=self.fields)
                failing = why
            else:
                if failing:
                    log.info("pool reconcile works again", extra=self.fields)
                failing = ""
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # a refill waiting for jobs starting looks again soon (it waits a bounded time)
                tick = YIELD_TICK_SECONDS if self._refill_held else TICK_SECONDS
                await asyncio.wait_for(self._wake.wait(), tick)

    def _desired(self, demand: PoolDemand) -> int:
        if demand.spec is None or not demand.serving:
            return 0
        return desired_idle(demand.spec.warm_pool_size, demand.spec.max_concurrent_jobs, demand.busy)

    async def reconcile(self) -> None:
        demand = self._demand()
        spec = demand.spec
        if demand.paused:
            return
        metrics.POOL_TARGET.labels(self.owner.namespace, self.owner.name).set(
            spec.warm_pool_size if spec else 0
        )
        if spec is None and not self.pods:
            return
        template_hash = spec.template_hash() if spec else ""
        plan = plan_pool(
            list(self.pods.values()),
            self._desired(demand),
            template_hash,
            self._clock(),
            spec.warm_pool_max_idle_age if spec else 0.0,
            spec.heartbeat.start_timeout if spec else 0.0,
            claimed=demand.waiting,
        )
        # all of them at once, before the first await: ``take`` never hands out a doomed pod
        for pod, _ in plan.delete:
            pod.deleting = True
        for pod, message in plan.failed:
            self._fail(pod, "AttachTimeout", message)
        failed: Exception | None = None
        doomed = [*plan.delete, *((pod, "it failed before it served") for pod, _ in plan.failed)]
        for pod, reason in doomed:
            log.info("replacing idle pod %s: %s", pod.name, reason, extra={**self.fields, "pod": pod.name})
            try:
                await self._pods.delete(PodIdentity(pod.namespace, pod.name, pod.uid))
            except Exception as exc:
                pod.deleting = False  # still live: it counts, and the next plan judges it again
                failed = failed or exc
                continue
            pod.deleted = True  # marked for deletion: room for another pod
            self._pool_changed.set()
        if failed is not None:
            self._update_gauge()
            raise failed
        created = 0
        # after a failure in a row, the next pool pod waits (the loop comes back every tick)
        create = plan.create if self._backoff.allows(self._clock()) else 0
        wait, self._yielding_since = refill_waits(
            demand.starting, demand.waiting, self._yielding_since, self._clock()
        )
        self._refill_held = wait and create > 0
        for _ in range(0 if wait else create):
            if not await self._create_one(template_hash):
                break
            created += 1
        if plan.delete or plan.failed or created:
            self._update_gauge()
            self._changed()

    async def _create_one(self, template_hash: str) -> bool:
        """One more idle pod, if the demand of this moment still wants it (jobs placed while
        an earlier create was awaited count)."""
        demand = self._demand()
        spec = demand.spec
        live = sum(1 for p in self.pods.values() if not p.deleting)
        if spec is None or demand.paused or live + self._creating >= self._desired(demand):
            return False
        if self._trust.key is None:
            return False  # no pods before the credentials: they could not be signed (deployment_trust)
        if not self.room(spec):
            return False  # a deleted pod not gone yet, or jobs placed meanwhile: no pod too many
        name = pod_name(self.owner.name, "pool", secrets.token_hex(3))
        body = self._trust.seal(build_runner_pod(self.owner, spec, self._runner_settings, name, None))
        self._creating += 1  # reserved before the first await: the next check counts it
        try:
            identity = await self._pods.create(body)
            self.pods[identity.uid] = PoolPod(
                identity.uid, identity.name, identity.namespace, template_hash, self._clock()
            )
            self._expect(identity, spec.heartbeat)
        finally:
            self._creating -= 1
            self._pool_changed.set()
        return True

    def _update_gauge(self) -> None:
        metrics.POOL_IDLE.labels(self.owner.namespace, self.owner.name).set(self.ready)
