"""The status writer and the gauges: what Prometheus sees follows the jobs at once, even while
the API server takes (or fails) the status writes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agent_operator.status_report import Changes, StatusSnapshot, report_status

pytestmark = pytest.mark.unit

LABELS = ("ns-status", "slow-api")


class HangingWriter:
    """A status write the API server never answers, as when it is overloaded or gone."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def write(self, generation: int, conditions: list[Any], fields: dict[str, Any]) -> bool:
        self.calls.append(fields)
        await asyncio.Event().wait()
        return True


def snapshot_of(active: int) -> StatusSnapshot:
    return StatusSnapshot(
        generation=1,
        conditions=[],
        worker_id="AW_1",
        active_jobs=active,
        idle_pods=0,
        busy_pods=active,
        max_jobs=1,
        counts={},
        labels=LABELS,
    )


def active_gauge() -> float | None:
    return REGISTRY.get_sample_value(
        "agent_operator_jobs_active", {"namespace": LABELS[0], "deployment": LABELS[1]}
    )


async def test_the_gauges_follow_the_jobs_while_a_status_write_hangs() -> None:
    writer, changes = HangingWriter(), Changes()
    state = {"active": 0}
    task = asyncio.create_task(report_status(writer, changes, lambda: snapshot_of(state["active"]), {}))
    try:
        changes.set()
        await asyncio.sleep(0.05)
        assert active_gauge() == 0
        assert len(writer.calls) == 1  # and that write hangs
        state["active"] = 1  # a job takes the deployment's one slot
        changes.set()
        await asyncio.sleep(0.05)
        assert active_gauge() == 1, "the gauge waited for the status write"
        assert len(writer.calls) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
