"""The operator's decisions, as pure functions of their inputs (tested without servers)."""

from __future__ import annotations

import dataclasses

from livekit.protocol import agent


@dataclasses.dataclass(frozen=True)
class Capacity:
    """What a deployment holds right now."""

    max_jobs: int
    running: int  # jobs with a pod (started or starting)
    reserved: int  # accepted availability requests still waiting for their assignment
    registered: bool
    draining: bool
    # livekit-server's agents.target_load: it offers no job to a worker whose load reached it
    target_load: float
    blocked_reason: str = ""  # e.g. credentials unusable: never accept

    @property
    def used(self) -> int:
        return self.running + self.reserved

    @property
    def full(self) -> bool:
        return self.used >= self.max_jobs

    @property
    def load(self) -> float:
        """The load reported to LiveKit: it reaches ``target_load`` only at ``max_jobs``.

        livekit-server routes a job only to a worker whose load is below its target load (0.7
        by default), so the plain fraction in use would refuse jobs from 70% of the capacity on.
        Scaled, the fraction still orders workers for LiveKit's load-weighted choice.
        """
        if self.max_jobs <= 0 or self.full:
            return 1.0
        return self.target_load * self.used / self.max_jobs


@dataclasses.dataclass(frozen=True)
class Verdict:
    accept: bool
    reason: str  # a metrics label: accepted, draining, at_capacity, not_registered, blocked


def availability(capacity: Capacity) -> Verdict:
    """Should this worker take one more job?"""
    if capacity.blocked_reason:
        return Verdict(False, "blocked")
    if capacity.draining:
        return Verdict(False, "draining")
    if not capacity.registered:
        return Verdict(False, "not_registered")
    if capacity.full:
        return Verdict(False, "at_capacity")
    return Verdict(True, "accepted")


def worker_status(capacity: Capacity) -> agent.UpdateWorkerStatus:
    """The load LiveKit weighs workers by (1 - load), and whether we are full."""
    full = capacity.draining or capacity.full or bool(capacity.blocked_reason)
    return agent.UpdateWorkerStatus(
        status=agent.WS_FULL if full else agent.WS_AVAILABLE,
        load=capacity.load,
        job_count=capacity.running,
        draining=capacity.draining,
    )
