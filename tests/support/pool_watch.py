"""Watching a warm pool from outside, for the tests of pool pods that fail before they serve:
when each pool pod appeared and went, the most idle pods the status ever showed, and the
``PoolPodFailed`` Events."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import watch

from devenv.kubeclient import eventually
from tests.support.operator import Deployments


class PoolWatch:
    """Watches the deployment's pool pods (a Kubernetes watch: a pod that no node can take lives
    for a few milliseconds, less than any poll interval) and polls its status: when each pod
    was first seen, when it was first seen going (deleting, or gone), and the largest idlePods
    the status ever showed."""

    def __init__(self, deployments: Deployments, name: str) -> None:
        self.deployments = deployments
        self.name = name
        self.seen: dict[str, float] = {}
        self.going: dict[str, float] = {}
        self.most_idle = 0
        self.error: Exception | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _watch_pods(self) -> None:
        core, namespace = self.deployments.core, self.deployments.namespace
        selector = f"agentoperator.dev/deployment={self.name}"
        version = ""
        while True:
            try:
                if not version:
                    listed = await core.list_namespaced_pod(namespace, label_selector=selector)
                    for pod in listed.items:
                        self._saw(pod, "ADDED")
                    live = {pod.metadata.name for pod in listed.items}
                    now = asyncio.get_running_loop().time()
                    for gone in set(self.seen) - live:  # deleted while no watch ran
                        self.going.setdefault(gone, now)
                    version = listed.metadata.resource_version
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        core.list_namespaced_pod,
                        namespace,
                        label_selector=selector,
                        resource_version=version,
                        timeout_seconds=60,
                    ):
                        pod = event["object"]
                        version = pod.metadata.resource_version
                        self._saw(pod, event["type"])
            except Exception as exc:  # the watch expired (410) or an API blip: list again
                self.error = exc
                version = ""
                await asyncio.sleep(0.2)

    def _saw(self, pod: Any, kind: str) -> None:
        if (pod.metadata.labels or {}).get("agentoperator.dev/state") != "idle":
            return
        now = asyncio.get_running_loop().time()
        name = pod.metadata.name
        self.seen.setdefault(name, now)
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            self.going.setdefault(name, now)

    async def _poll_status(self) -> None:
        while True:
            try:
                status = (await self.deployments.get(self.name)).get("status") or {}
                self.most_idle = max(self.most_idle, int(status.get("idlePods", 0)))
            except Exception as exc:  # not created yet, or an API blip: look again
                self.error = exc
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> PoolWatch:
        self._tasks = [asyncio.create_task(self._watch_pods()), asyncio.create_task(self._poll_status())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def created(self, count: int) -> Callable[[], Awaitable[bool]]:
        async def enough() -> bool:
            for task in self._tasks:
                assert not task.done(), task
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
