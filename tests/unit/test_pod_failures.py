"""Reading a job pod's status for failures that end its job at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agent_operator.kube.pod_failures import pod_failure
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from tests.unit.test_supervisor_forget import Outcomes, Refuses, Terminations, start_request

pytestmark = pytest.mark.unit


def pod(containers: list[dict[str, Any]], phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {"status": {"phase": phase, "containerStatuses": containers, **status}}


def agent(state: dict[str, Any]) -> dict[str, Any]:
    return {"name": "agent", "image": "example.com/agent:1", "state": state}


def test_an_oom_killed_container_is_oomkilled_and_says_to_raise_the_limit() -> None:
    failed = pod_failure(
        pod([agent({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})], phase="Failed")
    )
    assert failed is not None
    assert failed.reason == "OOMKilled"
    assert "exit code 137" in failed.message
    assert "resources.limits.memory" in failed.message


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled_names_the_image_and_what_to_check(reason: str) -> None:
    said = 'Back-off pulling image "example.com/agent:1": not found'
    failed = pod_failure(pod([agent({"waiting": {"reason": reason, "message": said}})], phase="Pending"))
    assert failed is not None
    assert failed.reason == reason
    assert "'example.com/agent:1'" in failed.message
    assert said in failed.message
    assert "imagePullSecrets" in failed.message


def test_an_unschedulable_pod_quotes_the_scheduler_and_says_to_lower_the_requests() -> None:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient memory.",
    }
    failed = pod_failure(pod([], phase="Pending", conditions=[condition]))
    assert failed is not None
    assert failed.reason == "Unschedulable"
    assert "Insufficient memory" in failed.message
    assert "resources.requests" in failed.message


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Pending"},
        {"phase": "Pending", "containerStatuses": [agent({"waiting": {"reason": "ContainerCreating"}})]},
        {"phase": "Running", "containerStatuses": [agent({"running": {}})]},
        {"phase": "Failed", "containerStatuses": [agent({"terminated": {"exitCode": 1, "reason": "Error"}})]},
        {"phase": "Succeeded", "containerStatuses": [agent({"terminated": {"exitCode": 0}})]},
        # scheduled after a while: not a failure
        {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
    ],
)
def test_starting_running_or_otherwise_ended_pods_have_no_such_failure(
    status: dict[str, Any],
) -> None:
    assert pod_failure({"status": status}) is None


def test_a_status_less_pod_has_no_failure() -> None:
    assert pod_failure({}) is None


def _failures(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "agent_operator_job_pod_failures_total", {"namespace": "ns", "deployment": "voice", "reason": reason}
    )
    return value or 0.0


async def test_a_pod_failure_ends_a_started_job_at_once_with_its_reason_counted_once() -> None:
    outcomes = Outcomes()
    terminations = Terminations()
    supervisor = Supervisor(Refuses(), terminations, listener=outcomes)
    identity = PodIdentity("ns", "voice-j9-ab", "uid-9")
    # no re-attach grace or start timeout decides it: both are far away
    settings = HeartbeatSettings(start_timeout=3600)
    supervisor.expect(RunnerBinding(identity, DeploymentRef("ns", "voice"), settings))
    await supervisor.assign(identity.uid, start_request("J9"))
    before = _failures("OOMKilled")
    await supervisor.pod_failed(identity.uid, "OOMKilled", "container agent was OOMKilled")
    await asyncio.wait_for(outcomes.got.wait(), 5)
    await supervisor.pod_failed(identity.uid, "OOMKilled", "again")  # the next status event
    await supervisor.stop()
    [(job_id, outcome)] = outcomes.ended
    assert job_id == "J9"
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.reason == "OOMKilled"
    assert outcome.error == "container agent was OOMKilled"
    assert _failures("OOMKilled") == before + 1
    assert terminations.pods == [identity]
