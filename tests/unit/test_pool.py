"""Warm pool planning."""

from __future__ import annotations

import pytest

from agent_operator.pool_plan import (
    REFILL_YIELD_SECONDS,
    PoolPod,
    desired_idle,
    pick_idle,
    plan_pool,
    refill_waits,
)

pytestmark = pytest.mark.unit


def pod(uid: str, created: float, attached: bool = True, template: str = "t1", **kw: object) -> PoolPod:
    p = PoolPod(uid, f"p-{uid}", "ns", template, created, attached=attached, attached_once=attached)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def plan(pods: list[PoolPod], desired: int, now: float = 100.0) -> tuple[list[str], int]:
    """The pods replaced ("uid:first word of why"; "uid:failed" for a pod that failed) and how
    many to create."""
    result = plan_pool(pods, desired, "t1", now, max_idle_age=60, start_timeout=10)
    replaced = [f"{p.uid}:{why.split()[0]}" for p, why in result.delete]
    return sorted(replaced + [f"{p.uid}:failed" for p, _ in result.failed]), result.create


def test_desired_never_exceeds_capacity_left() -> None:
    assert desired_idle(size=3, max_jobs=10, busy=2) == 3
    assert desired_idle(size=3, max_jobs=4, busy=2) == 2
    assert desired_idle(size=3, max_jobs=4, busy=5) == 0


def test_fill_an_empty_pool() -> None:
    assert plan([], 3) == ([], 3)


def test_stale_old_and_lost_pods_are_replaced_and_one_never_attached_has_failed() -> None:
    pods = [
        pod("stale", 95, template="t0"),
        pod("old", 30),
        pod("silent", 80, attached=False),
        pod("lost", 90, attached=False, attached_once=True, detached_at=85.0),
        pod("fine", 95),
        pod("young", 95, attached=False),
    ]
    deleted, create = plan(pods, 3)
    assert deleted == ["lost:runner", "old:idle", "silent:failed", "stale:built"]
    assert create == 1


def test_shrink_drops_unready_then_oldest() -> None:
    pods = [pod("a", 50), pod("b", 60), pod("c", 95, attached=False), pod("d", 80)]
    deleted, create = plan(pods, 2)
    assert deleted == ["a:pool", "c:pool"]
    assert create == 0


def test_deleting_pods_are_not_counted() -> None:
    assert plan([pod("x", 90, deleting=True)], 1) == ([], 1)


def test_pick_prefers_the_longest_waiting_current_attached_pod() -> None:
    pods = [
        pod("new", 90),
        pod("older", 80),
        pod("stale", 10, template="t0"),
        pod("unattached", 5, attached=False),
    ]
    chosen = pick_idle(pods, "t1")
    assert chosen is not None
    assert chosen.uid == "older"
    # no attached pod: one still starting is taken (its runner gets the job when it attaches)
    starting = pick_idle([pod("u", 1, attached=False), pod("s", 1, template="t0")], "t1")
    assert starting is not None
    assert starting.uid == "u"
    assert pick_idle([pod("d", 1, deleting=True), pod("s", 1, template="t0")], "t1") is None


def adopted(uid: str, created: float, adopted_at: float, attached: bool = False) -> PoolPod:
    return pod(uid, created, attached=attached, adopted=True, expected_at=adopted_at)


def test_adopted_pods_get_the_start_timeout_from_their_adoption() -> None:
    """Defect 1: an idle pod found after a restart is older than the start timeout; it is kept
    while its runner may still re-attach, and judged like any other pod once it did."""
    pods = [adopted("a", created=50, adopted_at=95), adopted("b", created=50, adopted_at=95, attached=True)]
    assert plan(pods, 2) == ([], 0)
    # its window passed without an attach: replaced
    assert plan([adopted("c", created=50, adopted_at=85)], 1) == (["c:failed"], 1)


def test_an_adopted_pod_not_yet_attached_is_neither_shrunk_nor_taken() -> None:
    """Defect 1 (a deploy): its runner may be attached to the previous leader, which may just
    have handed it a call; only a pod this operator saw attached can go."""
    pods = [adopted("unknown", created=50, adopted_at=95), adopted("known", 60, 95, attached=True)]
    assert plan(pods, 0) == (["known:pool"], 0)
    assert pick_idle([adopted("unknown", created=50, adopted_at=95)], "t1") is None
    # a stale template does not make it go either, until it attached here
    assert plan([adopted("old", 50, 95)], 1) == ([], 0)


def test_pods_that_jobs_being_placed_will_take_are_not_shrunk_away() -> None:
    """The cap is reached by two jobs still being placed (desired 0): the two idle pods are
    theirs to take, not to delete (deleting them made the jobs go cold: issue 14, defect 3)."""
    pods = [pod("a", 50), pod("b", 60)]
    result = plan_pool(pods, 0, "t1", 100.0, max_idle_age=60, start_timeout=10, claimed=2)
    assert (result.delete, result.create) == ([], 0)
    one = plan_pool(pods, 0, "t1", 100.0, max_idle_age=60, start_timeout=10, claimed=1)
    assert [(p.uid, why) for p, why in one.delete] == [("a", "pool shrunk")]


def test_new_pool_pods_wait_a_bounded_time_for_jobs_starting_never_for_a_job_without_a_pod() -> None:
    assert refill_waits(starting=0, waiting=0, since=None, now=10.0) == (False, None)
    wait, since = refill_waits(starting=2, waiting=0, since=None, now=10.0)
    assert (wait, since) == (True, 10.0)  # two calls joining rooms: the refill waits
    assert refill_waits(2, 0, since, 10.0 + REFILL_YIELD_SECONDS - 0.01) == (True, 10.0)
    assert refill_waits(2, 0, since, 10.0 + REFILL_YIELD_SECONDS) == (False, 10.0)  # at most so long
    assert refill_waits(2, 1, since, 10.5) == (False, None)  # a job needs a pod made: at once
    assert refill_waits(0, 0, since, 10.5) == (False, None)  # they started: the refill goes on
