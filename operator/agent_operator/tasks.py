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

    async def settle(self, timeout: float) -> None:
        """Let what runs (and what it starts meanwhile) finish, for up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)

    async def close(self) -> None:
        """Cancel what is still running and wait for it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
