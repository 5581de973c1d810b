"""A deleted deployment drains: it takes no new job, lets running ones end within the
drain timeout, then shuts the rest down and removes every pod it has."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from agent_operator.collaborators import Collaborators
from agent_operator.kube.podspec import LABEL_DEPLOYMENT
from agent_operator.vocabulary import PodIdentity

if TYPE_CHECKING:  # the deployment owns this; no import at run time
    from agent_operator.deployment import DeploymentRuntime


async def drain(dep: DeploymentRuntime, services: Collaborators) -> None:
    timeout = dep.spec.drain_timeout if dep.spec else 0.0
    dep.event("Draining", f"deployment deleted: {dep.jobs.busy} jobs may run for up to {timeout:.0f}s")
    worker = dep.registration.worker
    if worker is not None:
        await worker.send_status()
    deadline = time.monotonic() + timeout
    while dep.jobs.busy and time.monotonic() < deadline:  # noqa: ASYNC110 - jobs end by several paths
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    for entry in dep.jobs.with_pod:
        assert entry.pod is not None
        grace = float(services.grace_of(entry.pod) or 15)
        await services.supervisor.shutdown_job(entry.pod.uid, "deployment deleted", grace)
    selector = f"{LABEL_DEPLOYMENT}={dep.owner.name}"
    for pod in await services.pods.list(dep.owner.namespace, selector):
        meta: dict[str, Any] = pod["metadata"]  # type: ignore[assignment]
        await services.pods.delete(PodIdentity(meta["namespace"], meta["name"], meta["uid"]))
    for _ in range(120):
        if not await services.pods.list(dep.owner.namespace, selector):
            break
        await asyncio.sleep(0.5)
    dep.event("Drained", "all job pods are gone")
