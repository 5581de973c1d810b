"""Steps of a job's teardown that share one deadline: each waits only for what is left of it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


async def bounded(
    task: asyncio.Future[Any], deadline: float, what: str, abandoned: list[asyncio.Task[Any]]
) -> bool:
    """Wait for ``task`` until the loop time ``deadline``; True if it finished. A task still
    running then is cancelled and put in ``abandoned`` (the process must exit without it)."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining > 0:
        await asyncio.wait({task}, timeout=remaining)
    if task.done():
        return True
    logger.error("%s: gave up waiting (shutdown budget exhausted)", what)
    task.cancel()
    if isinstance(task, asyncio.Task):
        abandoned.append(task)
    return False


async def bounded_step(
    task: asyncio.Future[Any], deadline: float, what: str, abandoned: list[asyncio.Task[Any]]
) -> bool:
    """:func:`bounded`, and an exception the step raised is logged (the teardown goes on)."""
    if not await bounded(task, deadline, what, abandoned):
        return False
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", what, exc_info=task.exception())
    return True
