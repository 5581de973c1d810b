"""Nothing a unit test started outlives it.

A test that drives the operator's parts without their owner's ``run()`` (a deployment runtime
made by ``tests.support.deployment_fakes.harness``, a fake gRPC stream) leaves their tasks
pending when it ends: a busy label waiting for its call's join, a placement held at a gate.
pytest-asyncio 1.x cancels such tasks before it closes the test's loop; 0.24, the lowest
release supported, does not, and the garbage collector later destroys them in whatever test
runs then, which logs "Task was destroyed but it is pending!" (asyncio, ERROR) into that
test's capture (CI-12, CI-15: a test asserting no ERROR records failed). Here they are
cancelled and awaited, and the loop's async generators closed, the same way under both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def nothing_outlives_the_test() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
