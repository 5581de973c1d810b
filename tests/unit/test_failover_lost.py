"""Failover of a job whose runner was judged lost (its connection dropped, no re-attach within
``failover.lostAfter``'s second): the job restarts at once, while its dead pod is left until
the kubelet tells why it died, so the restart's Event and metric name the real cause; a pod
nothing is told of is deleted after ``SETTLE_SECONDS``; a job not restarted loses its pod at
once. The deployment with fakes of its collaborators."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from agent_operator import failover
from agent_operator.failover import lost_after
from agent_operator.supervisor import JobOutcome, OutcomeStatus
from agent_operator.supervisor.types import DEATH_LOST
from tests.support.deployment_fakes import Harness, harness, settle, spec
from tests.unit.test_failover import running

pytestmark = pytest.mark.unit

LOST = JobOutcome(
    OutcomeStatus.FAILED,
    "runner lost",
    "runner closed the stream; no re-attach within 1.0s",
    death=DEATH_LOST,
)


def restarts(h: Harness, cause: str) -> float:
    namespace = h.dep.ref.namespace
    labels = {"namespace": namespace, "deployment": h.dep.ref.name, "cause": cause}
    return REGISTRY.get_sample_value("agent_operator_job_restarts_total", labels) or 0.0


def oom_killed(pod: Any) -> dict[str, Any]:
    """The dead pod as the kubelet reports it: its container OOMKilled."""
    terminated = {"exitCode": 137, "reason": "OOMKilled"}
    return {
        "metadata": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "agent", "state": {"terminated": terminated}}],
        },
    }


def told(h: Harness) -> list[str]:
    return [m for r, m in h.events.recorded if r == "JobRestarted"]


async def test_a_lost_runners_job_restarts_at_once_and_is_told_with_the_cause_the_kubelet_gives() -> None:
    h = harness()
    first = await running(h)
    before = {c: restarts(h, c) for c in ("oom", "lost")}
    await h.dep.job_ended(first, LOST)
    await settle(lambda: len(h.supervisor.assigned) == 2)  # restarting before the kubelet spoke
    assert h.pods.deleted == [], "the dead pod is left for the kubelet to tell why it died"
    second = h.supervisor.records[h.supervisor.assigned[1][0]]
    await h.dep.job_started(second)
    assert told(h) == []  # not yet: why the pod died is not known
    assert restarts(h, "lost") == before["lost"]
    await h.dep.pod_gone(first.pod, oom_killed(first.pod))
    await settle(lambda: told(h))
    (said,) = told(h)
    assert f"restarted on pod {second.pod.name}" in said
    assert "oom" in said
    assert restarts(h, "oom") == before["oom"] + 1
    assert restarts(h, "lost") == before["lost"]
    assert h.reports.updates == []  # LiveKit hears nothing


async def test_a_lost_runners_pod_nothing_is_told_of_is_deleted_and_the_restart_told_as_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(failover, "SETTLE_SECONDS", 0.2)
    h = harness()
    first = await running(h)
    before = restarts(h, "lost")
    await h.dep.job_ended(first, LOST)
    await settle(lambda: len(h.supervisor.assigned) == 2)
    await h.dep.job_started(h.supervisor.records[h.supervisor.assigned[1][0]])
    await settle(lambda: told(h))
    assert (first.pod, 0) in h.pods.deleted  # a runner alive but cut off: its pod goes
    assert "lost" in told(h)[0]
    assert restarts(h, "lost") == before + 1


async def test_a_lost_runners_job_that_is_not_restarted_loses_its_pod_at_once() -> None:
    h = harness(spec(failover={"maxRestarts": 0, "window": "10m"}))
    first = await running(h)
    await h.dep.job_ended(first, LOST)
    await settle(lambda: h.reports.updates)
    assert (first.pod, 0) in h.pods.deleted
    assert len(h.supervisor.assigned) == 1
    assert "not restarted" in h.reports.updates[0][2]


async def test_only_a_deployment_with_failover_judges_a_dropped_runner_quickly() -> None:
    assert lost_after(spec()) == 1.0
    assert lost_after(spec(failover={"enabled": False})) is None
    assert lost_after(None) is None
    h = harness()
    first = await running(h)
    assert h.supervisor.bindings[first.pod.uid].lost_after == 1.0
    off = harness(spec(failover={"enabled": False}))
    record = await running(off)
    assert off.supervisor.bindings[record.pod.uid].lost_after is None
