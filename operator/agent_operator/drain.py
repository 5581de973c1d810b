"""A deleted deployment drains: it takes no new job, lets running ones end until the drain
deadline, then shuts the rest down at once (one grace for all, not one after another) and
removes every pod it has.

The deadline is the resource's deletionTimestamp plus its drainTimeout, so an operator that
takes over a drain half way (after a restart) keeps the same one. ``Drained`` is told only
once no pod of the deployment is left; pods that outlast the wait (a node that is gone)
are named in a ``DrainIncomplete`` warning instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.protocol import agent

from agent_operator import metrics
from agent_operator.collaborators import Collaborators
from agent_operator.job_ends import JobReporter
from agent_operator.jobs import Job, JobTable
from agent_operator.kube.podspec import DEFAULT_GRACE_SECONDS, LABEL_DEPLOYMENT, Owner
from agent_operator.vocabulary import PodIdentity

log = logging.getLogger("agent_operator.deployment")

POLL_SECONDS = 0.5
# after the shutdown: how long the pods may take to go, beyond their longest grace period
PODS_GONE_MARGIN_SECONDS = 60.0
# a drain taken over after a restart: how long runners get to re-attach, so that they are
# asked to shut down gracefully rather than killed when their grace runs out
ATTACH_WAIT_SECONDS = 15.0


async def drain(
    owner: Owner,
    remaining: float,
    jobs: JobTable,
    send_status: Callable[[], Awaitable[None]] | None,
    services: Collaborators,
    event: Callable[..., None],
    fields: dict[str, str],
) -> bool:
    """True once every pod is gone, False when some outlasted the wait (told as an Event).

    ``remaining``: seconds left until the drain deadline (running jobs may end until then).
    ``send_status``: tells LiveKit at once that the worker drains (None: not registered).
    """
    event("Draining", f"deployment deleted: {jobs.busy} jobs may run for up to {remaining:.0f}s more")
    if send_status is not None:
        await send_status()
    deadline = time.monotonic() + max(0.0, remaining)
    while jobs.busy and time.monotonic() < deadline:  # noqa: ASYNC110 - jobs end by several paths
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    await _until_attached(jobs.with_pod, services, time.monotonic() + ATTACH_WAIT_SECONDS)
    graces = await shut_down_all(jobs.with_pod, services, fields)
    selector = f"{LABEL_DEPLOYMENT}={owner.name}"
    found = await services.pods.list(owner.namespace, selector)
    await asyncio.gather(*(services.pods.delete(_identity(pod)) for pod in found))
    wait = max([*graces, *(_grace(pod) for pod in found), 0.0]) + PODS_GONE_MARGIN_SECONDS
    left = await _until_gone(services, owner.namespace, selector, wait)
    if left:
        names = ", ".join(sorted(left)[:10]) + (" ..." if len(left) > 10 else "")
        log.warning("drain incomplete: %d pods still present after %.0fs", len(left), wait, extra=fields)
        await services.events.record(  # awaited: the deployment's own tasks end with the drain
            owner,
            "DrainIncomplete",
            f"{len(left)} pods still present {wait:.0f}s after their deletion ({names}); the "
            "deployment is removed and Kubernetes' garbage collector deletes them (they are "
            "owned by it) once their node lets it",
            warning=True,
        )
        return False
    await services.events.record(owner, "Drained", "all job pods are gone")
    return True


async def shut_down_all(entries: list[Job], services: Collaborators, fields: dict[str, str]) -> list[float]:
    """Ask every runner to end its job, all at once; each gets its pod's grace period, so
    the whole takes the longest grace, not their sum. The graces given, one per job."""
    pods = [e.pod for e in entries if e.pod is not None]
    graces = [_or_default(services.grace_of(pod)) for pod in pods]
    for entry in entries:
        log.info("deployment deleted; shutting the runner down", extra=entry.log_fields(fields))
    await asyncio.gather(
        *(
            services.supervisor.shutdown_job(pod.uid, "deployment deleted", grace)
            for pod, grace in zip(pods, graces, strict=True)
        )
    )
    return graces


async def _until_attached(entries: list[Job], services: Collaborators, deadline: float) -> None:
    def detached() -> bool:
        return any(e.pod is not None and not services.supervisor.attached(e.pod.uid) for e in entries)

    while detached() and time.monotonic() < deadline:  # noqa: ASYNC110 - attaches come by the stream
        await asyncio.sleep(POLL_SECONDS)


async def _until_gone(services: Collaborators, namespace: str, selector: str, wait: float) -> list[str]:
    """The names of the pods still listed once none is, or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while True:
        left = [str(p["metadata"]["name"]) for p in await services.pods.list(namespace, selector)]  # type: ignore[index]
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(POLL_SECONDS)


def _identity(pod: dict[str, Any]) -> PodIdentity:
    meta: dict[str, Any] = pod["metadata"]
    return PodIdentity(meta["namespace"], meta["name"], meta["uid"])


def _grace(pod: dict[str, Any]) -> float:
    spec: dict[str, Any] = pod.get("spec") or {}
    return _or_default(spec.get("terminationGracePeriodSeconds"))


def _or_default(grace: int | None) -> float:
    return float(DEFAULT_GRACE_SECONDS if grace is None else grace)


async def refuse_assignment(
    job_id: str,
    offered: Job | None,
    jobs: JobTable,
    worker: JobReporter | None,
    labels: tuple[str, ...],
    fields: dict[str, str],
) -> None:
    """An assignment that arrives while the deployment drains (its offer may predate the
    drain): no pod is made, and LiveKit hears at once that the job failed here."""
    if offered is not None:
        jobs.release(offered)
    log.warning("refused an assignment: the deployment is draining", extra=fields)
    metrics.JOBS_ENDED.labels(*labels, "rejected").inc()
    if worker is None or not await worker.update_job(job_id, agent.JS_FAILED, "the deployment is draining"):
        log.warning("could not tell LiveKit the assignment was refused (not connected)", extra=fields)
