"""Tasks still running after the stop are named in the log (kopf waits up to 5 s for them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import pytest

from agent_operator import app

pytestmark = pytest.mark.unit


async def deaf_to_cancel(gate: asyncio.Event) -> None:
    """Like a cleanup that awaits I/O after its cancellation."""
    while not gate.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await inner_wait(gate)


async def inner_wait(gate: asyncio.Event) -> None:
    await gate.wait()


async def test_a_task_outliving_the_stop_is_named_with_the_line_it_waits_at(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "LINGER_REPORT_SECONDS", 0.2)
    stop_flag = asyncio.Event()
    existing = set(asyncio.all_tasks())
    gate = asyncio.Event()
    stuck = asyncio.create_task(deaf_to_cancel(gate))
    finished = asyncio.create_task(asyncio.sleep(0))
    report = asyncio.create_task(app._report_lingering(stop_flag, existing))
    await asyncio.sleep(0.05)
    stuck.cancel()
    stop_flag.set()
    with caplog.at_level(logging.WARNING, logger="agent_operator"):
        await asyncio.wait_for(report, 5)
    gate.set()
    await asyncio.gather(stuck, finished)
    lines = [r.getMessage() for r in caplog.records if "after the stop" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("1 tasks still running 0s after the stop")
    assert re.search(
        r"deaf_to_cancel test_lingering_tasks.py:\d+ > inner_wait test_lingering_tasks.py:\d+ > ", lines[0]
    )


async def test_nothing_is_reported_when_every_task_ended(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "LINGER_REPORT_SECONDS", 0.1)
    stop_flag = asyncio.Event()
    existing = set(asyncio.all_tasks())
    ended = asyncio.create_task(asyncio.sleep(0))
    await ended
    stop_flag.set()
    with caplog.at_level(logging.WARNING, logger="agent_operator"):
        await asyncio.wait_for(app._report_lingering(stop_flag, existing), 5)
    assert not [r for r in caplog.records if "after the stop" in r.getMessage()]
