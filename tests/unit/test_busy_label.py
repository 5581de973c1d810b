"""A pool pod's busy label, the record a restarted operator finds a call by, is written once
the job has joined its room (or ``BUSY_LABEL_WITHIN_SECONDS`` on), not at the assignment:
its patch takes the CPU the call joins with. Until it lands the pod is labelled idle, and a
restarted operator takes the runner's word (``adoption``): a pod whose runner has a job is
never the pool's."""

from __future__ import annotations

import dataclasses

import pytest

from agent_operator import placement
from agent_operator.jobs import Phase
from agent_operator.kube import pod_trust
from agent_operator.kube.podspec import LABEL_DEPLOYMENT, LABEL_STATE, LABEL_TEMPLATE
from agent_operator.listener_routing import DeploymentRouter
from agent_operator.supervisor import JobRecord
from agent_operator.vocabulary import PodIdentity
from tests.support.deployment_fakes import Harness, assignment, harness, offer, ours, settle

pytestmark = pytest.mark.unit

POOL = PodIdentity("ns", "voice-pool-1", "pool-1")
KEY = pod_trust.signing_key("secret")  # the harness's credentials


def with_idle_pod(h: Harness) -> None:
    """An attached, idle pool pod (the warm path)."""
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.dep.expect(POOL, h.dep.heartbeat())
    h.dep.pool.adopt(POOL, current, None)
    h.dep.pool.attached(POOL.uid)


async def placed_warm(h: Harness, job_id: str = "J1") -> JobRecord:
    """A job assigned and sent to the pool pod's runner."""
    with_idle_pod(h)
    h.dep.availability(offer(job_id))
    await h.dep.assignment(assignment(job_id))
    await settle(lambda: POOL.uid in h.supervisor.records)
    return h.supervisor.records[POOL.uid]


def assigned_events(h: Harness) -> list[str]:
    return [message for reason, message in h.events.recorded if reason == "JobAssigned"]


async def test_the_busy_label_and_the_job_assigned_event_wait_for_the_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(placement, "BUSY_LABEL_WITHIN_SECONDS", 60.0)  # only the join can write it
    h = harness()
    record = await placed_warm(h)
    await h.dep.job_started(record)  # a livekit-agents entrypoint runs; ctx.connect() not returned
    await settle(timeout=0.3)
    assert h.pods.busy == [], "no label while the call joins"
    assert assigned_events(h) == []

    await DeploymentRouter(lambda namespace, name: h.dep).job_joined(record)  # JOB_STATE_RUNNING
    await settle(lambda: h.pods.busy)
    assert h.pods.busy == [(POOL, "J1")]
    ((_, info),) = h.pods.busy_info
    assert info.start_request, "the label's patch carries the start request a restart resumes from"
    await settle(lambda: assigned_events(h))
    assert assigned_events(h) == ["job J1 in room room-1: pool pod voice-pool-1"]


async def test_the_busy_label_goes_after_its_bound_when_the_join_never_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(placement, "BUSY_LABEL_WITHIN_SECONDS", 0.2)
    h = harness()
    await placed_warm(h)
    await settle(lambda: h.pods.busy, timeout=5)
    assert h.pods.busy == [(POOL, "J1")]
    assert len(assigned_events(h)) == 1


async def test_a_join_on_another_pod_does_not_label_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "BUSY_LABEL_WITHIN_SECONDS", 60.0)
    h = harness()
    record = await placed_warm(h)
    router = DeploymentRouter(lambda namespace, name: h.dep)
    elsewhere = PodIdentity("ns", "voice-other", "other")
    await router.job_joined(
        dataclasses.replace(record, binding=dataclasses.replace(record.binding, pod=elsewhere))
    )
    await router.job_joined(dataclasses.replace(record, job_id="J2"))
    await settle(timeout=0.3)
    assert h.pods.busy == []


async def test_the_busy_labels_wait_until_every_starting_job_of_the_deployment_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four calls at once: the first to join does not patch its pod while the others join."""
    monkeypatch.setattr(placement, "BUSY_LABEL_WITHIN_SECONDS", 60.0)
    h = harness()
    first = await placed_warm(h, "J1")
    second_pod = PodIdentity("ns", "voice-pool-2", "pool-2")
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.dep.expect(second_pod, h.dep.heartbeat())
    h.dep.pool.adopt(second_pod, current, None)
    h.dep.pool.attached(second_pod.uid)
    h.dep.availability(offer("J2", "room-2"))
    await h.dep.assignment(assignment("J2", "room-2"))
    await settle(lambda: second_pod.uid in h.supervisor.records)
    second = h.supervisor.records[second_pod.uid]
    router = DeploymentRouter(lambda namespace, name: h.dep)
    await h.dep.job_started(first)  # their entrypoints run; ctx.connect() not returned
    await h.dep.job_started(second)

    await router.job_joined(first)
    await settle(timeout=0.3)
    assert h.pods.busy == [], "J2 still joins: J1's label waits"
    assert assigned_events(h) == []

    await router.job_joined(second)
    await settle(lambda: len(h.pods.busy) == 2)
    assert set(h.pods.busy) == {(POOL, "J1"), (second_pod, "J2")}
    assert len(assigned_events(h)) == 2


@pytest.mark.parametrize("gone", ["ended", "left the pod"])
async def test_no_busy_label_on_a_pod_whose_job_is_over_or_moved(
    monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    monkeypatch.setattr(placement, "BUSY_LABEL_WITHIN_SECONDS", 0.2)
    h = harness()
    await placed_warm(h)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    if gone == "ended":
        entry.phase = Phase.ENDED
    else:  # its runner died: a failover placed it again, on another pod
        entry.pod = PodIdentity("ns", "voice-j1-new", "new")
    await settle(lambda: assigned_events(h), timeout=5)
    await settle(timeout=0.1)
    assert h.pods.busy == [], "the pod goes with its job; it is not labelled with it"


async def test_a_pool_pod_whose_runner_attaches_with_a_job_leaves_the_pool() -> None:
    """Labelled idle (the previous operator died before the label): its runner's job wins."""
    h = harness()
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.dep.expect(POOL, h.dep.heartbeat())
    h.dep.pool.adopt(POOL, current, None)
    h.dep.runner_attached(POOL, idle=False)
    assert POOL.uid not in h.dep.pool.pods
    assert h.dep.pool.take(current) is None, "never handed to another job"
    assert h.dep.pool.ready == 0


def idle_labelled(identity: PodIdentity, template_hash: str) -> dict[str, object]:
    return ours(
        {
            "metadata": {
                "namespace": identity.namespace,
                "name": identity.name,
                "uid": identity.uid,
                "labels": {
                    LABEL_DEPLOYMENT: "voice",
                    LABEL_STATE: "idle",
                    LABEL_TEMPLATE: template_hash,
                },
                "annotations": {},
            },
            "status": {"phase": "Running"},
        }
    )


async def test_a_pod_labelled_idle_whose_runner_came_back_with_a_job_first_is_not_adopted_idle() -> None:
    """The runner re-attached (with its job) before the pods were listed: the pod stays out
    of the pool, so its attach window never runs out and deletes the call's pod."""
    h = harness()
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.supervisor.attached_uids.add(POOL.uid)
    h.dep.expect(POOL, h.dep.heartbeat())
    h.supervisor.records[POOL.uid] = JobRecord("J1", "room-1", h.supervisor.bindings[POOL.uid], 0.0)
    assert h.dep.adoption.adopt(idle_labelled(POOL, current), key=KEY), "trusted"
    assert POOL.uid not in h.dep.pool.pods


async def test_a_pod_labelled_idle_whose_idle_runner_attached_first_is_counted_ready() -> None:
    h = harness()
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.supervisor.attached_uids.add(POOL.uid)
    assert h.dep.adoption.adopt(idle_labelled(POOL, current), key=KEY), "trusted"
    assert h.dep.pool.ready == 1, "attached here already: idle and ready, not unknown"
    assert h.dep.pool.take(current) is not None
