"""The operator runtime's routing, with fakes: pod events go to the deployment their label
names, supervisor events to the deployment of their binding; no uid map on the side."""

from __future__ import annotations

from typing import Any, cast

import pytest
from livekit.protocol import agent

from agent_operator.runtime import OperatorConfig, OperatorRuntime
from agent_operator.supervisor import JobOutcome, JobRecord, OutcomeStatus, RunnerBinding
from agent_operator.vocabulary import DeploymentRef, HeartbeatSettings, PodIdentity
from tests.support.deployment_fakes import Harness, assignment, harness, offer, settle

pytestmark = pytest.mark.unit


def operator_with(h: Harness) -> OperatorRuntime:
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    runtime.supervisor = cast(Any, h.supervisor)
    runtime.pods = cast(Any, h.pods)
    runtime.deployments[("ns", "voice")] = h.dep
    return runtime


def pod_body(
    pod: PodIdentity, deployment: str, phase: str = "Running", exit_code: int | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"exitCode": exit_code}}}]
    return {
        "metadata": {
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "labels": {"agentoperator.dev/deployment": deployment},
        },
        "spec": {"terminationGracePeriodSeconds": 7},
        "status": status,
    }


async def placed(h: Harness, job_id: str) -> PodIdentity:
    h.dep.availability(offer(job_id))
    await h.dep.assignment(assignment(job_id))
    await settle(lambda: h.supervisor.assigned)
    entry = h.dep.jobs.get(job_id)
    assert entry is not None
    assert entry.pod is not None
    return entry.pod


async def test_a_deleted_pod_reaches_its_deployment_by_label_and_the_supervisor_forgets_it() -> None:
    h = harness()
    runtime = operator_with(h)
    pod = await placed(h, "J1")
    h.supervisor.records.clear()  # its runner never attached: the deployment decides
    await runtime.on_pod_event("MODIFIED", pod_body(pod, "voice"))
    assert runtime.grace_of(pod) == 7
    await runtime.on_pod_event("DELETED", pod_body(pod, "voice"))
    assert h.supervisor.forgotten == [pod.uid]
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_FAILED)]
    assert runtime.grace_of(pod) is None


async def test_a_pod_of_another_deployment_is_not_routed_here() -> None:
    h = harness()
    runtime = operator_with(h)
    pod = await placed(h, "J1")
    h.supervisor.records.clear()
    await runtime.on_pod_event("DELETED", pod_body(pod, "someone-else"))
    assert h.reports.updates == []
    assert "J1" in h.dep.jobs


async def test_a_finished_pod_is_reported_by_its_exit_code_and_removed() -> None:
    h = harness()
    runtime = operator_with(h)
    pod = await placed(h, "J1")
    h.supervisor.records.clear()
    await runtime.on_pod_event("MODIFIED", pod_body(pod, "voice", phase="Succeeded", exit_code=0))
    assert h.supervisor.exited
    assert h.supervisor.exited[0][0] == pod.uid
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_SUCCESS)]
    assert pod in [deleted for deleted, _ in h.pods.deleted]


async def test_supervisor_events_go_to_the_deployment_of_the_binding() -> None:
    h = harness()
    runtime = operator_with(h)
    pod = await placed(h, "J1")
    ours = JobRecord(
        "J1", "room-1", RunnerBinding(pod, DeploymentRef("ns", "voice"), HeartbeatSettings()), 0.0
    )
    theirs = JobRecord(
        "J1", "room-1", RunnerBinding(pod, DeploymentRef("ns", "other"), HeartbeatSettings()), 0.0
    )
    await runtime.router.job_ended(theirs, JobOutcome(OutcomeStatus.SUCCESS, "done"))
    assert h.reports.updates == []
    await runtime.router.job_started(ours)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.phase.value == "running"
    await runtime.router.job_ended(ours, JobOutcome(OutcomeStatus.SUCCESS, "done"))
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_SUCCESS)]
    assert "J1" not in h.dep.jobs
