"""Warm pool planning, as a pure function: which idle pods to replace, how many to add.

An idle pod is replaced when it was built from an older template (never serve a stale pod),
is older than ``maxIdleAge``, never attached within the start timeout, or lost its stream
and did not come back within it. Idle + busy never exceeds ``maxConcurrentJobs``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class PoolPod:
    uid: str
    name: str
    namespace: str
    template_hash: str
    created_at: float  # monotonic
    attached: bool = False
    attached_once: bool = False
    detached_at: float | None = None
    deleting: bool = False


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    delete: list[tuple[PoolPod, str]]
    create: int


def desired_idle(size: int, max_jobs: int, busy: int) -> int:
    return max(0, min(size, max_jobs - busy))


def plan_pool(
    pods: list[PoolPod],
    desired: int,
    template_hash: str,
    now: float,
    max_idle_age: float,
    start_timeout: float,
) -> PoolPlan:
    delete: list[tuple[PoolPod, str]] = []
    keep: list[PoolPod] = []
    for pod in pods:
        if pod.deleting:
            continue
        if pod.template_hash != template_hash:
            delete.append((pod, "built from an older template"))
        elif now - pod.created_at > max_idle_age:
            delete.append((pod, f"idle longer than maxIdleAge ({max_idle_age:.0f}s)"))
        elif not pod.attached_once and now - pod.created_at > start_timeout:
            delete.append((pod, f"runner did not attach within {start_timeout:.0f}s"))
        elif not pod.attached and pod.detached_at is not None and now - pod.detached_at > start_timeout:
            delete.append((pod, f"runner lost its stream and did not return within {start_timeout:.0f}s"))
        else:
            keep.append(pod)
    if len(keep) > desired:
        # shrink: drop the ones not ready yet first, then the oldest
        keep.sort(key=lambda p: (p.attached, p.created_at))
        for pod in keep[: len(keep) - desired]:
            delete.append((pod, "pool shrunk"))
        keep = keep[len(keep) - desired :]
    return PoolPlan(delete=delete, create=max(0, desired - len(keep)))


def pick_idle(pods: list[PoolPod], template_hash: str) -> PoolPod | None:
    """The attached, current pod that has waited longest: the job's warm path."""
    ready = [p for p in pods if p.attached and not p.deleting and p.template_hash == template_hash]
    return min(ready, key=lambda p: p.created_at) if ready else None
