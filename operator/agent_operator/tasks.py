"""Tasks that are still owned, so none dies unseen.

``BackgroundTasks``: one-off calls kept until done, failures logged, cancelled and awaited when
their owner stops (nothing fire-and-forget outlives the operator's shutdown).
``run_with_companions``: loops that must run for as long as their owner's main work (the
worker's status updates beside its reader, a deployment's status writer and pool beside its
registration). One that ends on its own is logged with its traceback, counted, and ends the
main work with ``CompanionStopped``, so the owner's failure handling (a reconnect, a restarted
daemon) takes over instead of the loop being silently gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from agent_operator import metrics

T = TypeVar("T")


class CompanionStopped(Exception):
    """A loop meant to run beside its owner's main work ended (failed, or returned)."""


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
                metrics.TASK_FAILURES.labels(self._what).inc()
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


async def run_with_companions(
    main: Awaitable[T],
    companions: Mapping[str, Awaitable[None]],
    log: logging.Logger,
    fields: Mapping[str, Any] | None = None,
) -> T:
    """``main``'s result, while each companion (named by its key) runs beside it.

    Companions run until cancelled; one that ends first is logged (with its error), counted in
    ``agent_operator_task_failures_total`` and ends ``main``: ``CompanionStopped`` is raised from
    its error. Every task is cancelled and awaited on the way out, cancellation included."""
    main_task = asyncio.ensure_future(main)
    names = {asyncio.ensure_future(coro): name for name, coro in companions.items()}
    try:
        done, _ = await asyncio.wait([main_task, *names], return_when=asyncio.FIRST_COMPLETED)
        if main_task in done:
            return main_task.result()
        task = next(t for t in names if t in done)
        error = None if task.cancelled() else task.exception()
        why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        metrics.TASK_FAILURES.labels(names[task]).inc()
        log.error("%s stopped (%s)", names[task], why, exc_info=error, extra=dict(fields or {}))
        raise CompanionStopped(f"{names[task]} stopped ({why})") from error
    finally:
        everything = [main_task, *names]
        for pending in everything:
            pending.cancel()
        await asyncio.gather(*everything, return_exceptions=True)


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
