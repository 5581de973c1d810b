"""One slot per pod in the supervisor: everything it knows of one runner pod in one place.

A slot is made when the operator expects the pod (or the resolver vouches for it) and
dropped when the pod is gone. It holds the pod's binding, its current stream (session),
its job (at most one, a pod is never reused) with the job's start request, the futures
others wait on, and the job's timers. Lists (idle runners, jobs) are derived from the
slots, never kept as second copies.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Iterator
from typing import Any

from agent_jobrunner.protocol import pb
from agent_operator.supervisor.session import RunnerSession
from agent_operator.supervisor.types import JobOutcome, JobRecord, RunnerBinding


@dataclasses.dataclass(eq=False)
class PodSlot:
    binding: RunnerBinding
    session: RunnerSession | None = None
    job: JobRecord | None = None
    request: pb.StartJobRequest | None = None  # until the job ends; sent once per stream
    started: asyncio.Future[JobRecord] | None = None
    ended: asyncio.Event | None = None
    timers: dict[str, asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    shutdown_asked: bool = False  # the operator sent the runner a ShutdownRequest
    # a runner that shut down on a signal the operator did not send (the kubelet's SIGTERM):
    # the outcome it would have, held until the pod's status says why (JobMachine.signalled)
    held: JobOutcome | None = None

    @property
    def uid(self) -> str:
        return self.binding.pod.uid

    @property
    def attached(self) -> bool:
        return self.session is not None and not self.session.closed

    def fields(self) -> dict[str, str]:
        """The log fields of a line about this pod (and its job, if it has one)."""
        if self.job is not None:
            return self.job.log_fields()
        return {"pod": str(self.binding.pod), "deployment": str(self.binding.deployment)}

    def hold_job(self, record: JobRecord, request: pb.StartJobRequest | None) -> None:
        self.job, self.request = record, request
        self.started = asyncio.get_running_loop().create_future()
        self.ended = asyncio.Event()

    def set_timer(self, kind: str, coro: Coroutine[Any, Any, None]) -> None:
        self.cancel_timer(kind)
        task = asyncio.create_task(coro, name=f"{kind}:{self.uid}")
        self.timers[kind] = task
        task.add_done_callback(lambda t: self.timers.pop(kind, None) if self.timers.get(kind) is t else None)

    def cancel_timer(self, kind: str) -> None:
        task = self.timers.pop(kind, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close_timers(self) -> None:
        tasks = [t for t in self.timers.values() if t is not asyncio.current_task()]
        self.timers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Slots:
    def __init__(self) -> None:
        self._slots: dict[str, PodSlot] = {}

    def __iter__(self) -> Iterator[PodSlot]:
        return iter(list(self._slots.values()))

    def get(self, uid: str) -> PodSlot | None:
        return self._slots.get(uid)

    def bind(self, binding: RunnerBinding) -> PodSlot:
        """The pod's slot, made now or given the newer binding."""
        slot = self._slots.get(binding.pod.uid)
        if slot is None:
            slot = self._slots[binding.pod.uid] = PodSlot(binding)
        else:
            slot.binding = binding
        return slot

    def drop(self, uid: str) -> PodSlot | None:
        return self._slots.pop(uid, None)
