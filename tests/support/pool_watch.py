"""Watching a warm pool from outside, for the tests of pool pods that fail before they serve:
when each pool pod appeared and went, the most idle pods the status ever showed, and the
``PoolPodFailed`` Events."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from devenv.kubeclient import eventually
from tests.support.operator import Deployments


class PoolWatch:
    """Polls the deployment's pool pods and status: when each pod was first seen, when it was
    first seen going (deleting, or gone), and the largest idlePods the status ever showed."""

    def __init__(self, deployments: Deployments, name: str) -> None:
        self.deployments = deployments
        self.name = name
        self.seen: dict[str, float] = {}
        self.going: dict[str, float] = {}
        self.most_idle = 0
        self.error: Exception | None = None
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            try:
                await self._look()
            except Exception as exc:  # not created yet, or an API blip: look again
                self.error = exc
            await asyncio.sleep(0.2)

    async def _look(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        pods = await self.deployments.pods(self.name)
        live = set()
        for pod in pods:
            if pod.metadata.labels.get("agentoperator.dev/state") != "idle":
                continue
            name = pod.metadata.name
            self.seen.setdefault(name, now)
            if pod.metadata.deletion_timestamp:
                self.going.setdefault(name, now)
            else:
                live.add(name)
        for name in self.seen:
            if name not in live:
                self.going.setdefault(name, now)
        status = (await self.deployments.get(self.name)).get("status") or {}
        self.most_idle = max(self.most_idle, int(status.get("idlePods", 0)))

    def __enter__(self) -> PoolWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def created(self, count: int) -> Callable[[], Awaitable[bool]]:
        async def enough() -> bool:
            assert self._task is not None
            assert not self._task.done(), self._task
            return len(self.seen) >= count

        return enough

    def replacement_waits(self) -> list[float]:
        """From each pod's going to the next pod's first sight, in creation order."""
        order = sorted(self.seen, key=self.seen.__getitem__)
        return [self.seen[b] - self.going[a] for a, b in itertools.pairwise(order) if a in self.going]


async def failure_events(deployments: Deployments, name: str, count: int, timeout: float) -> list[Any]:
    async def enough() -> list[Any] | None:
        events = [e for e in await deployments.events(name) if e.reason == "PoolPodFailed"]
        return events if sum(e.count or 1 for e in events) >= count else None

    found: list[Any] = await eventually(enough, timeout, f"{count} PoolPodFailed events of {name}")
    return found
