"""Defect 3 of issue 14, the race a burst found: more live pods than maxConcurrentJobs.

A pod stays live in the API server's list (no deletionTimestamp) until its delete call
returns, and may be live as soon as its create is sent. These tests hold a delete open
while jobs are placed, and count pods the way the e2e burst test samples them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from livekit.protocol import agent

from agent_operator.jobs import Job, JobTable, Phase
from agent_operator.listener_routing import DeploymentRouter
from agent_operator.pool_plan import REFILL_YIELD_SECONDS
from agent_operator.runtime import OperatorConfig, OperatorRuntime
from agent_operator.supervisor import JobOutcome, OutcomeStatus
from agent_operator.vocabulary import PodIdentity
from tests.support.deployment_fakes import NAMESPACE, Harness, assignment, harness, offer, settle, spec

pytestmark = pytest.mark.unit


async def full_house(h: Harness) -> None:
    """Three calls running on pods of their own and the pool's two idle pods attached: 5 live
    pods."""
    await h.dep.pool.reconcile()
    for uid in list(h.dep.pool.pods):
        h.dep.pool.attached(uid)
    for job_id in ("J1", "J2", "J3"):
        h.dep.availability(offer(job_id, f"room-{job_id}"))
        await h.dep.assignment(assignment(job_id, f"room-{job_id}"))
    await settle(lambda: len(h.supervisor.assigned) == 3)
    router = DeploymentRouter(lambda namespace, name: h.dep)
    for record in h.supervisor.records.values():  # their runners started them, in their rooms
        await router.job_started(record)
        await router.job_joined(record)
    await h.dep.pool.reconcile()  # refill: two idle pods again
    for uid in list(h.dep.pool.pods):
        h.dep.pool.attached(uid)
    assert len(h.pods.live) == 5
    assert h.dep.pool.ready == 2


async def test_jobs_placed_as_the_pool_reconciles_take_its_pods_and_never_exceed_the_cap() -> None:
    """The last two slots are assigned just as the pool reconciles (it had been woken): it
    must not shrink away the idle pods those jobs are about to take and create cold pods for
    them while the deletes are in flight (7 live pods at maxConcurrentJobs 5)."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 2}))
    await full_house(h)
    h.pods.delete_gate.close()  # a slow API server: deletes take a while to land
    reconcile = asyncio.ensure_future(h.dep.pool.reconcile())
    for job_id in ("J4", "J5"):
        h.dep.availability(offer(job_id, f"room-{job_id}"))
        await h.dep.assignment(assignment(job_id, f"room-{job_id}"))
    await settle(lambda: len(h.supervisor.assigned) == 5 or h.pods.delete_gate.waiting)
    h.pods.delete_gate.open()
    await reconcile
    await settle(lambda: len(h.supervisor.assigned) == 5)
    assert h.pods.peak <= 5, f"{h.pods.peak} live pods at once at maxConcurrentJobs 5"
    assert [uid for uid, _, _ in h.supervisor.assigned[3:]] != []
    assert h.pods.deleted == [], "the idle pods went to the two jobs; none was deleted"


async def test_a_job_placed_while_idle_pods_are_being_replaced_waits_for_their_deletes() -> None:
    """The template changed: the pool deletes its two idle pods (the deletes are slow to
    land) when a job comes. The job cannot take a doomed pod; a cold pod created before the
    deletes land would make 6 live pods at maxConcurrentJobs 5. It waits for room instead."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 2}))
    await full_house(h)
    h.dep.update(spec(maxConcurrentJobs=5, warmPool={"size": 2}, entrypoint="agents.voice:other"), 2)
    h.pods.delete_gate.close()
    reconcile = asyncio.ensure_future(h.dep.pool.reconcile())
    await settle(lambda: h.pods.delete_gate.waiting)
    h.dep.availability(offer("J4", "room-J4"))
    await h.dep.assignment(assignment("J4", "room-J4"))
    await settle()
    h.pods.delete_gate.open()
    await reconcile
    await settle(lambda: len(h.supervisor.assigned) == 4)
    assert h.pods.peak <= 5, f"{h.pods.peak} live pods at once at maxConcurrentJobs 5"
    entry = h.dep.jobs.get("J4")
    assert entry is not None
    assert entry.phase is Phase.STARTING


async def test_an_idle_pod_whose_delete_failed_still_counts_and_is_not_replaced_twice() -> None:
    """A delete that fails (the API server away) leaves the pod live: it keeps counting
    against the cap, and is deleted again on the next reconcile."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 2}))
    await full_house(h)
    h.dep.update(spec(maxConcurrentJobs=5, warmPool={"size": 2}, entrypoint="agents.voice:other"), 2)
    real_delete = h.pods.delete
    failures = 2

    async def flaky_delete(pod: object, grace_seconds: int | None = None) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("connection refused")
        await real_delete(pod, grace_seconds)  # type: ignore[arg-type]

    h.pods.delete = flaky_delete  # type: ignore[method-assign]
    with pytest.raises(OSError, match="connection refused"):
        await h.dep.pool.reconcile()
    assert len(h.pods.live) == 5
    await h.dep.pool.reconcile()  # no room for a replacement before the old pods are deleted
    assert h.pods.peak <= 5, f"{h.pods.peak} live pods at once at maxConcurrentJobs 5"
    await h.dep.pool.reconcile()
    assert h.pods.peak <= 5
    assert len(h.dep.pool.pods) >= 2


async def test_a_job_that_finds_no_room_within_its_start_timeout_fails_clearly() -> None:
    """The adopted pool pod never attaches here and no slot frees: the job is not given a pod
    beyond the cap; at its start timeout it fails, saying why, and LiveKit hears it."""
    h = harness(spec(maxConcurrentJobs=2, warmPool={"size": 1}, heartbeat={"startTimeout": "1s"}))
    h.dep.jobs.place("J0", "r0").phase = Phase.RUNNING
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.dep.pool.adopt(PodIdentity("ns", "voice-pool-1", "adopted-1"), current, None)
    h.dep.availability(offer("J1"))
    await h.dep.assignment(assignment("J1"))
    await settle(lambda: h.reports.updates)
    ((job_id, status, error),) = h.reports.updates
    assert (job_id, status) == ("J1", agent.JS_FAILED)
    assert "maxConcurrentJobs 2" in error
    assert h.pods.created == []
    assert "J1" not in h.dep.jobs


async def test_a_finished_pool_pod_counts_until_its_delete_returns() -> None:
    """A pool pod's runner exited (its pod Failed). The pod stays in the API server's list
    until the operator's delete of it returns: a replacement made before that is one pod too
    many."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 2}))
    await full_house(h)
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    runtime.supervisor, runtime.pods = cast(Any, h.supervisor), cast(Any, h.pods)
    runtime.deployments[("ns", "voice")] = h.dep
    pool_pod = next(iter(h.dep.pool.pods.values()))
    body = {
        "metadata": {
            "namespace": pool_pod.namespace,
            "name": pool_pod.name,
            "uid": pool_pod.uid,
            "labels": {"agentoperator.dev/deployment": "voice"},
        },
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1}}}]},
    }
    h.pods.delete_gate.close()
    event = asyncio.ensure_future(runtime.on_pod_event("MODIFIED", body))
    await settle(lambda: h.pods.delete_gate.waiting)
    await h.dep.pool.reconcile()  # the pool refills while that delete is in flight
    h.pods.delete_gate.open()
    await event
    assert h.pods.peak <= 5, f"{h.pods.peak} live pods at once at maxConcurrentJobs 5"
    await h.dep.pool.reconcile()
    assert pool_pod.uid not in h.pods.live
    assert len(h.pods.live) == 5, "replaced once its delete returned"


async def test_an_ended_job_whose_pod_delete_failed_keeps_its_slot_until_the_pod_is_gone() -> None:
    """The call ended and LiveKit heard it, but the delete of its pod failed (the API server
    away): the pod is still live, so its slot stays taken, and the pool makes no pod in its
    place, until the pod is seen gone."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 2}))
    await full_house(h)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.pod is not None
    job_pod = entry.pod
    real_delete = h.pods.delete

    async def failing_delete(pod: PodIdentity, grace_seconds: int | None = None) -> None:
        if pod.uid == job_pod.uid:
            raise OSError("connection refused")
        await real_delete(pod, grace_seconds)

    h.pods.delete = failing_delete  # type: ignore[method-assign]
    await h.dep.ends.finish(entry, JobOutcome(OutcomeStatus.SUCCESS, "done"))
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_SUCCESS)]
    await h.dep.pool.reconcile()
    assert h.pods.peak <= 5, f"{h.pods.peak} live pods at once at maxConcurrentJobs 5"
    assert h.dep.jobs.busy == 3, "the slot of a pod still live is not free"
    h.pods.live.pop(job_pod.uid)  # someone deleted it after all: the pod watch says DELETED
    await h.dep.pod_gone(job_pod, None)
    assert "J1" not in h.dep.jobs
    assert h.dep.jobs.busy == 2


async def call_on_a_pool_pod(h: Harness) -> str:
    """The pool's one pod attached, then a call assigned: it takes that pod (returned)."""
    await h.dep.pool.reconcile()
    (uid,) = list(h.dep.pool.pods)
    h.dep.pool.attached(uid)
    h.dep.availability(offer("J1", "room-J1"))
    await h.dep.assignment(assignment("J1", "room-J1"))
    await settle(lambda: len(h.supervisor.assigned) == 1)
    return uid


async def test_the_refill_waits_while_calls_join_their_rooms_on_the_pools_pods() -> None:
    """A call takes an idle pod: no new pool pod while its runner joins the room (a pod's start
    would take the CPU it joins with). A livekit-agents entrypoint joins in ctx.connect(),
    after its runner answered the StartJobRequest: the refill waits until the runner says the
    room is joined (JOB_STATE_RUNNING), then goes at once (the pool is woken)."""
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 1}))
    router = DeploymentRouter(lambda namespace, name: h.dep)
    uid = await call_on_a_pool_pod(h)
    assert h.supervisor.assigned[0][0] == uid  # the warm pod
    await h.dep.pool.reconcile()
    assert len(h.pods.live) == 1, "no new pool pod while the call starts"
    record = h.supervisor.records[uid]
    await router.job_started(record)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.phase is Phase.RUNNING
    await h.dep.pool.reconcile()
    assert len(h.pods.live) == 1, "started, its room not joined yet: still no new pool pod"
    h.dep.pool._wake.clear()
    await router.job_joined(record)
    assert h.dep.pool._wake.is_set(), "the pool's loop is woken for the refill it held back"
    await h.dep.pool.reconcile()
    assert len(h.pods.live) == 2


def refill_held(h: Harness) -> bool:
    return h.dep.pool._refill_held


async def test_a_held_back_refill_goes_after_its_bound_when_a_call_never_joins() -> None:
    """An entrypoint that never calls ctx.connect() holds the refill back for
    REFILL_YIELD_SECONDS at most; the pool's loop ticks fast only while it holds one back."""
    clock = [100.0]
    h = harness(spec(maxConcurrentJobs=5, warmPool={"size": 1}))
    h.dep.pool._clock = lambda: clock[0]
    uid = await call_on_a_pool_pod(h)
    await h.dep.job_started(h.supervisor.records[uid])
    await h.dep.pool.reconcile()
    assert len(h.pods.live) == 1
    assert refill_held(h)
    clock[0] += REFILL_YIELD_SECONDS
    await h.dep.pool.reconcile()
    assert len(h.pods.live) == 2, "the bound passed: the pool refills though the call never joined"
    assert not refill_held(h), "nothing held back: the loop ticks at its normal pace"
    assert h.dep.jobs.starting == 1, "the call is still counted as joining its room"


def test_a_call_joins_again_on_its_failovers_new_pod_and_an_adopted_one_is_mid_call() -> None:
    jobs = JobTable()
    first, second = PodIdentity(NAMESPACE, "voice-a", "uid-a"), PodIdentity(NAMESPACE, "voice-b", "uid-b")
    job = jobs.place("J1", "room-J1")
    job.pod, job.phase = first, Phase.STARTING
    assert jobs.starting == 1
    job.phase = Phase.RUNNING  # its runner answered; the room is not joined yet
    assert jobs.starting == 1
    assert not jobs.joined("J1", second), "another pod's word is not this job's"
    assert jobs.starting == 1
    assert jobs.joined("J1", first)
    assert jobs.starting == 0
    job.pod, job.phase = second, Phase.RUNNING  # failover: restarted on a new pod
    assert jobs.starting == 1, "joined on the dead pod, not on this one"
    assert not jobs.joined("J2", second), "no such job"
    third = PodIdentity(NAMESPACE, "voice-c", "uid-c")
    jobs.adopt(Job("J3", "room-J3", Phase.RUNNING, pod=third, adopted=True))
    assert jobs.starting == 1, "an adopted job is mid-call, not joining"
