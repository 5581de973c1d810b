"""A deployment's warm pool: idle runner pods kept attached, refilled off the critical path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from typing import TYPE_CHECKING

from agent_operator import decisions, metrics
from agent_operator.kube.pods import brief
from agent_operator.kube.podspec import build_runner_pod
from agent_operator.pool import PoolPod, desired_idle, pick_idle, plan_pool
from agent_operator.supervisor import PodIdentity, RunnerBinding

if TYPE_CHECKING:
    from agent_operator.deployment import DeploymentRuntime

log = logging.getLogger("agent_operator.pool")
TICK_SECONDS = 1.0


class WarmPool:
    def __init__(self, dep: DeploymentRuntime) -> None:
        self.dep = dep
        self.pods: dict[str, PoolPod] = {}
        self._wake = asyncio.Event()

    # -- what happens to pool pods -----------------------------------------------------------
    def adopt(self, identity: PodIdentity, template_hash: str, created: str | None) -> None:
        """An idle pod found at start (the pool survives an operator restart)."""
        age = 0.0
        if created:
            born = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            age = max(0.0, (datetime.datetime.now(datetime.UTC) - born).total_seconds())
        self.pods[identity.uid] = PoolPod(
            identity.uid, identity.name, identity.namespace, template_hash, time.monotonic() - age
        )

    def attached(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            pod.attached = pod.attached_once = True
            pod.detached_at = None
            self._update_gauge()
            self.wake()

    def detached(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            pod.attached = False
            pod.detached_at = time.monotonic()
            self._update_gauge()

    def gone(self, uid: str) -> None:
        if self.pods.pop(uid, None) is not None:
            self._update_gauge()
            self.wake()

    def take(self, template_hash: str) -> PoolPod | None:
        """An attached idle pod for a job, removed from the pool (a pod is never reused)."""
        pod = pick_idle(list(self.pods.values()), template_hash)
        if pod is not None:
            del self.pods[pod.uid]
            self._update_gauge()
            self.wake()
        return pod

    @property
    def ready(self) -> int:
        return sum(1 for p in self.pods.values() if p.attached and not p.deleting)

    def wake(self) -> None:
        self._wake.set()

    # -- reconcile ---------------------------------------------------------------------------
    async def run(self) -> None:
        failing = ""  # the same failure every tick (the API server away) is logged once
        while True:
            try:
                await self.reconcile()
            except Exception as exc:
                why = brief(exc)
                if why != failing:
                    log.warning("pool reconcile failed: %s", why, extra=self.dep.fields)
                failing = why
            else:
                if failing:
                    log.info("pool reconcile works again", extra=self.dep.fields)
                failing = ""
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)

    async def reconcile(self) -> None:
        dep, spec = self.dep, self.dep.spec
        if dep.rt.handover.active:  # the next operator adopts the pool as it is
            return
        metrics.POOL_TARGET.labels(dep.owner.namespace, dep.owner.name).set(
            spec.warm_pool_size if spec else 0
        )
        if spec is None or dep.draining:
            desired = 0
        else:
            desired = desired_idle(spec.warm_pool_size, spec.max_concurrent_jobs, len(dep.jobs))
        if spec is None and not self.pods:
            return
        template_hash = spec.template_hash() if spec else ""
        plan = plan_pool(
            list(self.pods.values()),
            desired,
            template_hash,
            time.monotonic(),
            spec.warm_pool_max_idle_age if spec else 0.0,
            spec.heartbeat.start_timeout if spec else 0.0,
        )
        for pod, reason in plan.delete:
            pod.deleting = True
            log.info("replacing idle pod %s: %s", pod.name, reason, extra={**dep.fields, "pod": pod.name})
            await dep.rt.pods.delete(PodIdentity(pod.namespace, pod.name, pod.uid))
        if spec is None or dep.blocked_reason == "InvalidSpec" or dep.trust.key is None:
            return  # no pods before the credentials: they could not be signed (deployment_trust)
        for _ in range(plan.create):
            name = decisions.pod_name(dep.owner.name, "pool", secrets.token_hex(3))
            body = dep.trust.seal(build_runner_pod(dep.owner, spec, dep.rt.runner_settings, name, None))
            identity = await dep.rt.pods.create(body)
            self.pods[identity.uid] = PoolPod(
                identity.uid, identity.name, identity.namespace, template_hash, time.monotonic()
            )
            dep.rt.track_pod(identity, dep)
            dep.rt.supervisor.expect(RunnerBinding(identity, dep.ref, spec.heartbeat))
        if plan.delete or plan.create:
            self._update_gauge()
            dep.mark_dirty()

    def _update_gauge(self) -> None:
        metrics.POOL_IDLE.labels(self.dep.owner.namespace, self.dep.owner.name).set(self.ready)
