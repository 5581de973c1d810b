"""Background calls that are still owned: kept until done, failures logged, cancelled and
awaited when their owner stops (nothing fire-and-forget outlives the operator's shutdown)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any


class BackgroundTasks:
    def __init__(self, log: logging.Logger, what: str, fields: Mapping[str, Any] | None = None) -> None:
        self._log = log
        self._what = what
        self._fields = dict(fields or {})
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background; its exception is logged, never raised."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                self._log.exception("%s failed", self._what, extra=self._fields)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel what is still running and wait for it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


async def first_of(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Until ``event`` is set or ``task`` ends (a failure of the task is raised)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    if task.done():
        task.result()


async def unless(work: Awaitable[bool], stop: asyncio.Event | None) -> bool | None:
    """``work``'s result, or None if ``stop`` is set first (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (task, waiter):
            fut.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    return task.result() if not task.cancelled() else None
