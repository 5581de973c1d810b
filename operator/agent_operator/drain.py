"""A deleted deployment drains: it takes no new job, lets running ones end within the
drain timeout, then shuts the rest down and removes every pod it has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent_operator.collaborators import Collaborators
from agent_operator.jobs import JobTable
from agent_operator.kube.podspec import LABEL_DEPLOYMENT, Owner
from agent_operator.vocabulary import PodIdentity


async def drain(
    owner: Owner,
    timeout: float,
    jobs: JobTable,
    send_status: Callable[[], Awaitable[None]] | None,
    services: Collaborators,
    event: Callable[..., None],
) -> None:
    """``send_status``: tells LiveKit at once that the worker drains (None: not registered)."""
    event("Draining", f"deployment deleted: {jobs.busy} jobs may run for up to {timeout:.0f}s")
    if send_status is not None:
        await send_status()
    deadline = time.monotonic() + timeout
    while jobs.busy and time.monotonic() < deadline:  # noqa: ASYNC110 - jobs end by several paths
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    for entry in jobs.with_pod:
        assert entry.pod is not None
        grace = float(services.grace_of(entry.pod) or 15)
        await services.supervisor.shutdown_job(entry.pod.uid, "deployment deleted", grace)
    selector = f"{LABEL_DEPLOYMENT}={owner.name}"
    for pod in await services.pods.list(owner.namespace, selector):
        meta: dict[str, Any] = pod["metadata"]  # type: ignore[assignment]
        await services.pods.delete(PodIdentity(meta["namespace"], meta["name"], meta["uid"]))
    for _ in range(120):
        if not await services.pods.list(owner.namespace, selector):
            break
        await asyncio.sleep(0.5)
    event("Drained", "all job pods are gone")
