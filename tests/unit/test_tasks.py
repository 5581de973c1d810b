"""Owned background calls: a failure is logged with the owner's fields, close() cancels and waits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent_operator.tasks import BackgroundTasks

pytestmark = pytest.mark.unit


async def test_a_failing_call_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks(logging.getLogger("test.tasks"), "status update", {"deployment": "ns/a"})

    async def boom() -> None:
        raise RuntimeError("api server away")

    with caplog.at_level(logging.ERROR, "test.tasks"):
        tasks.spawn(boom())
        for _ in range(50):
            if not tasks:
                break
            await asyncio.sleep(0.01)
    assert len(tasks) == 0, "a finished call is not kept"
    record = next(r for r in caplog.records if r.name == "test.tasks")
    assert record.getMessage() == "status update failed"
    assert record.deployment == "ns/a"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert "api server away" in str(record.exc_info[1])


async def test_close_cancels_and_awaits_what_still_runs() -> None:
    tasks = BackgroundTasks(logging.getLogger("test.tasks"), "slow call")
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    tasks.spawn(slow())
    await asyncio.sleep(0)
    assert len(tasks) == 1
    await asyncio.wait_for(tasks.close(), 5)
    assert cancelled.is_set()
    assert len(tasks) == 0
