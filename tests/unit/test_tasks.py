"""Owned background calls: a failure is logged with the owner's fields, close() cancels and waits."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from agent_operator.tasks import BackgroundTasks, CompanionStopped, run_with_companions

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


async def test_a_companion_that_fails_is_logged_counted_and_ends_the_main_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 14, defect 13: the worker's status loop died on a protocol field it did not know
    and nothing noticed. Now its end is an error line and ends the work it runs beside."""
    main_cancelled = asyncio.Event()

    async def main() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            main_cancelled.set()
            raise
        return "never"

    async def status_loop() -> None:
        await asyncio.sleep(0.01)
        raise ValueError('Protocol message UpdateWorkerStatus has no "draining" field.')

    before = REGISTRY.get_sample_value("agent_operator_task_failures_total", {"task": "status updates"})
    with caplog.at_level(logging.ERROR, "test.tasks"), pytest.raises(CompanionStopped) as stopped:
        await asyncio.wait_for(
            run_with_companions(
                main(),
                {"status updates": status_loop()},
                logging.getLogger("test.tasks"),
                {"deployment": "ns/a"},
            ),
            5,
        )
    assert main_cancelled.is_set(), "the main work is cancelled and awaited"
    assert "status updates stopped (ValueError" in str(stopped.value)
    assert isinstance(stopped.value.__cause__, ValueError)
    record = next(r for r in caplog.records if r.name == "test.tasks")
    assert record.levelno == logging.ERROR
    assert record.deployment == "ns/a"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    after = REGISTRY.get_sample_value("agent_operator_task_failures_total", {"task": "status updates"})
    assert (after or 0) - (before or 0) == 1


async def test_a_companion_that_returns_counts_as_stopped() -> None:
    async def main() -> None:
        await asyncio.sleep(3600)

    async def loop_that_returns() -> None:
        return None

    with pytest.raises(CompanionStopped, match="pool loop stopped \\(it returned\\)"):
        await asyncio.wait_for(
            run_with_companions(main(), {"pool loop": loop_that_returns()}, logging.getLogger("test.tasks")),
            5,
        )


async def test_the_main_result_is_returned_and_companions_are_cancelled() -> None:
    companion_cancelled = asyncio.Event()

    async def main() -> int:
        await asyncio.sleep(0.01)
        return 42

    async def companion() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            companion_cancelled.set()
            raise

    assert await run_with_companions(main(), {"c": companion()}, logging.getLogger("test.tasks")) == 42
    assert companion_cancelled.is_set()


async def test_the_main_error_is_raised_as_it_is() -> None:
    async def main() -> None:
        raise KeyError("main failed")

    async def companion() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(KeyError, match="main failed"):
        await run_with_companions(main(), {"c": companion()}, logging.getLogger("test.tasks"))


async def test_cancelling_the_owner_cancels_and_awaits_everything() -> None:
    cancelled: list[str] = []

    async def sleeper(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    owner = asyncio.create_task(
        run_with_companions(sleeper("main"), {"c": sleeper("c")}, logging.getLogger("test.tasks"))
    )
    await asyncio.sleep(0.01)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert sorted(cancelled) == ["c", "main"]
