"""The supervisor's job state without a runner: a pod that goes away ends its job."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    JobOutcome,
    JobRecord,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from agent_operator.supervisor.types import NullListener

pytestmark = pytest.mark.unit


class Refuses:
    async def authenticate(self, credential: str) -> PodIdentity:
        raise AssertionError("no runner attaches in these tests")


class Terminations:
    def __init__(self) -> None:
        self.pods: list[PodIdentity] = []

    async def terminate(self, pod: PodIdentity, reason: str) -> None:
        self.pods.append(pod)


class Outcomes(NullListener):
    def __init__(self) -> None:
        self.ended: list[tuple[str, JobOutcome]] = []
        self.got = asyncio.Event()

    async def job_ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        self.ended.append((job.job_id, outcome))
        self.got.set()


def start_request(job_id: str) -> pb.StartJobRequest:
    job = agent.Job(id=job_id, room=models.Room(name="r1"))
    return pb.StartJobRequest(job=job.SerializeToString(), url="ws://x", token="t")


async def test_a_pod_deleted_before_its_job_ended_ends_the_job_as_failed() -> None:
    """Defect 2: a cold-path pod deleted while Pending (its runner never attached): the
    supervisor used to drop the binding and keep the job open with no timer, so its slot
    leaked and LiveKit never heard. Now forgetting the pod ends the job, once."""
    outcomes = Outcomes()
    supervisor = Supervisor(Refuses(), Terminations(), listener=outcomes)
    pod = PodIdentity("ns", "voice-j1-ab", "uid-1")
    supervisor.expect(RunnerBinding(pod, DeploymentRef("ns", "voice"), HeartbeatSettings(start_timeout=3600)))
    await supervisor.assign(pod.uid, start_request("J1"))
    await supervisor.forget(pod.uid)
    await asyncio.wait_for(outcomes.got.wait(), 5)
    await supervisor.forget(pod.uid)  # a second DELETED event: nothing more
    await supervisor.stop()
    [(job_id, outcome)] = outcomes.ended
    assert job_id == "J1"
    assert outcome.status is OutcomeStatus.FAILED
    assert "deleted" in outcome.error
    assert supervisor.job(pod.uid) is None


async def test_forgetting_a_pod_whose_job_ended_reports_nothing_more() -> None:
    outcomes = Outcomes()
    supervisor = Supervisor(Refuses(), Terminations(), listener=outcomes)
    pod = PodIdentity("ns", "voice-j2-ab", "uid-2")
    supervisor.expect(RunnerBinding(pod, DeploymentRef("ns", "voice"), HeartbeatSettings(start_timeout=3600)))
    await supervisor.assign(pod.uid, start_request("J2"))
    await supervisor.shutdown_job(pod.uid, "test", grace=0.01)  # no runner: killed after the grace
    await asyncio.wait_for(outcomes.got.wait(), 5)
    await supervisor.forget(pod.uid)
    await supervisor.stop()
    assert [(j, o.status) for j, o in outcomes.ended] == [("J2", OutcomeStatus.KILLED)]
