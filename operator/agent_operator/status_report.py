"""A deployment's status subresource and gauges, written when something changed.

The gauges are set at once, whatever the API server does; the status is written at most twice
a second, backing off while the API server fails (a slow or failing status write never holds
back what Prometheus sees)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from agent_operator import metrics
from agent_operator.collaborators import StatusWriting
from agent_operator.kube.status import Condition
from agent_operator.registration import short

log = logging.getLogger("agent_operator.deployment")

STATUS_MIN_INTERVAL, STATUS_MAX_RETRY_INTERVAL = 0.5, 8.0


@dataclasses.dataclass(frozen=True)
class StatusSnapshot:
    generation: int
    conditions: list[Condition]
    worker_id: str
    active_jobs: int
    idle_pods: int
    busy_pods: int
    max_jobs: int
    counts: dict[str, int]
    labels: tuple[str, str]


class Changes:
    """Something the status shows changed: the gauges and the status writer are both told."""

    def __init__(self) -> None:
        self.gauges = asyncio.Event()
        self.status = asyncio.Event()

    def set(self) -> None:
        self.gauges.set()
        self.status.set()


def set_gauges(now: StatusSnapshot) -> None:
    metrics.JOBS_ACTIVE.labels(*now.labels).set(now.active_jobs)
    metrics.MAX_CONCURRENT_JOBS.labels(*now.labels).set(now.max_jobs)
    metrics.POOL_BUSY.labels(*now.labels).set(now.busy_pods)


async def report_status(
    writer: StatusWriting,
    changes: Changes,
    snapshot: Callable[[], StatusSnapshot],
    fields: dict[str, str],
) -> None:
    await asyncio.gather(
        _publish_gauges(changes.gauges, snapshot), _write_status(writer, changes.status, snapshot, fields)
    )


async def _publish_gauges(dirty: asyncio.Event, snapshot: Callable[[], StatusSnapshot]) -> None:
    while True:
        await dirty.wait()
        dirty.clear()
        set_gauges(snapshot())


async def _write_status(
    writer: StatusWriting,
    dirty: asyncio.Event,
    snapshot: Callable[[], StatusSnapshot],
    fields: dict[str, str],
) -> None:
    pause = STATUS_MIN_INTERVAL
    while True:
        await dirty.wait()
        dirty.clear()
        now = snapshot()
        status = {
            "workerId": now.worker_id,
            "activeJobs": now.active_jobs,
            "idlePods": now.idle_pods,
            "busyPods": now.busy_pods,
            **now.counts,
        }
        try:
            await writer.write(now.generation, now.conditions, status)
            pause = STATUS_MIN_INTERVAL  # at most two status writes a second
        except Exception as exc:
            if pause in (STATUS_MIN_INTERVAL, STATUS_MAX_RETRY_INTERVAL):  # not twice a second
                log.warning("could not write status: %s", short(exc), extra=fields)
            dirty.set()
            pause = min(pause * 2, STATUS_MAX_RETRY_INTERVAL)
        await asyncio.sleep(pause)
