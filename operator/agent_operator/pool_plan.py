"""Warm pool planning, as pure functions: which idle pods to replace, how many to add, which
one a job takes.

An idle pod is replaced when it was built from an older template (never serve a stale pod),
is older than ``maxIdleAge``, or lost its stream and did not come back within the start
timeout; one whose runner never attached within it has failed (``failed``: the pool says so
and backs off, as for a failed prewarm). The start timeout runs from when this operator began to
wait for the runner: its creation, or its adoption after a restart (an adopted pod's runner
may still be attached to the previous operator, and may even have just been given a job).
An adopted pod that has not attached here yet is never shrunk away or handed a job. The
pool never shrinks away the pods that jobs being placed are about to take. Idle + busy
never exceeds ``maxConcurrentJobs`` (``WarmPool.room``, the one check before any create).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class PoolPod:
    uid: str
    name: str
    namespace: str
    template_hash: str
    created_at: float  # monotonic: the idle age counts from here
    attached: bool = False
    attached_once: bool = False
    detached_at: float | None = None
    deleting: bool = False  # its delete is asked for: never handed out
    deleted: bool = False  # the delete call returned: marked for deletion, no longer live
    # monotonic: when this operator began waiting for its runner (creation or adoption)
    expected_at: float | None = None
    adopted: bool = False

    @property
    def waiting_since(self) -> float:
        return self.created_at if self.expected_at is None else self.expected_at

    @property
    def unknown(self) -> bool:
        """Adopted and not seen attached here: its runner may be serving the previous leader."""
        return self.adopted and not self.attached_once


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    delete: list[tuple[PoolPod, str]]
    create: int
    failed: list[tuple[PoolPod, str]] = dataclasses.field(default_factory=list)


def desired_idle(size: int, max_jobs: int, busy: int) -> int:
    return max(0, min(size, max_jobs - busy))


def plan_pool(
    pods: list[PoolPod],
    desired: int,
    template_hash: str,
    now: float,
    max_idle_age: float,
    start_timeout: float,
    claimed: int = 0,
) -> PoolPlan:
    """``claimed``: jobs being placed that have no pod yet; each takes an idle pod first, so
    that many beyond ``desired`` are kept rather than deleted under them."""
    delete: list[tuple[PoolPod, str]] = []
    failed: list[tuple[PoolPod, str]] = []
    keep: list[PoolPod] = []
    for pod in pods:
        if pod.deleting:
            continue
        if pod.unknown and now - pod.waiting_since <= start_timeout:
            keep.append(pod)  # judged once its runner attaches here, or its window passes
        elif pod.template_hash != template_hash:
            delete.append((pod, "built from an older template"))
        elif now - pod.created_at > max_idle_age:
            delete.append((pod, f"idle longer than maxIdleAge ({max_idle_age:.0f}s)"))
        elif not pod.attached_once and now - pod.waiting_since > start_timeout:
            failed.append((pod, f"its runner did not attach within the start timeout ({start_timeout:.0f}s)"))
        elif not pod.attached and pod.detached_at is not None and now - pod.detached_at > start_timeout:
            delete.append((pod, f"runner lost its stream and did not return within {start_timeout:.0f}s"))
        else:
            keep.append(pod)
    if len(keep) > desired + claimed:
        # shrink: drop the ones not ready yet first, then the oldest; never an unknown one
        known = sorted((p for p in keep if not p.unknown), key=lambda p: (p.attached, p.created_at))
        excess = known[: len(keep) - desired - claimed]
        for pod in excess:
            delete.append((pod, "pool shrunk"))
        keep = [p for p in keep if p not in excess]
    return PoolPlan(delete=delete, create=max(0, desired - len(keep)), failed=failed)


def pick_idle(pods: list[PoolPod], template_hash: str) -> PoolPod | None:
    """The pod a job takes: attached ones first (the warm path; the longest waiting), else one
    still starting (its runner gets the job when it attaches: no new pod, no more pods than
    allowed). Never one being deleted, one of an older template or an unknown one."""
    usable = [p for p in pods if not p.deleting and not p.unknown and p.template_hash == template_hash]
    return min(usable, key=lambda p: (not p.attached, p.created_at)) if usable else None


# the longest new pool pods wait for jobs starting on this deployment's pods
REFILL_YIELD_SECONDS = 1.5


def refill_waits(starting: int, waiting: int, since: float | None, now: float) -> tuple[bool, float | None]:
    """Whether new pool pods wait now, and since when they have been waiting. They wait while
    jobs on pods have not joined their rooms yet (``JobTable.starting``: a pod's start, its
    container and its agent's imports, takes the CPU the calls join with), for at most
    ``REFILL_YIELD_SECONDS``; never while a job waits for a pod (it needs one made)."""
    if starting == 0 or waiting:
        return False, None
    since = now if since is None else since
    return now - since < REFILL_YIELD_SECONDS, since
