"""Failover on the deployment side, with fakes of its collaborators: a running job whose pod
died is placed again on a new pod (the same LiveKit job, identity and room, a fresh token, the
last checkpoint), LiveKit hears nothing; a job that ended by itself, never started, or spent
its budget ends as before."""

from __future__ import annotations

import json

import jwt
import pytest
from livekit.protocol import agent

from agent_jobrunner.protocol import pb
from agent_operator.failover import verdict
from agent_operator.jobs import Job, Phase
from agent_operator.supervisor import JobOutcome, JobRecord, OutcomeStatus
from agent_operator.supervisor.types import DEATH_EXITED, DEATH_OOM
from tests.support.deployment_fakes import Harness, assignment, harness, offer, settle, spec

pytestmark = pytest.mark.unit

DIED = JobOutcome(OutcomeStatus.FAILED, "runner exited", "exit code 137, Error", death=DEATH_EXITED)


async def running(h: Harness, job_id: str = "J1") -> JobRecord:
    """A job assigned, placed on a pod and started by its runner."""
    h.dep.availability(offer(job_id))
    await h.dep.assignment(assignment(job_id))
    await settle(
        lambda: any(uid for uid, r, _ in h.supervisor.assigned if agent.Job.FromString(r.job).id == job_id)
    )
    entry = h.dep.jobs.get(job_id)
    assert entry is not None
    assert entry.pod is not None
    record = h.supervisor.records[entry.pod.uid]
    await h.dep.job_started(record)
    return record


def checkpoint(job_id: str, seq: int, turn: int) -> pb.Checkpoint:
    state = {
        "runtime": "native",
        "turn": turn,
        "chat": [{"role": "user", "content": "what is the weather in paris"}],
    }
    return pb.Checkpoint(job_id=job_id, seq=seq, state=json.dumps(state).encode())


async def test_a_job_whose_pod_died_starts_again_on_a_new_pod_with_its_last_checkpoint() -> None:
    h = harness()
    first = await running(h)
    h.dep.job_checkpoint(first, checkpoint("J1", 1, 1))
    h.dep.job_checkpoint(first, checkpoint("J1", 3, 2))
    h.dep.job_checkpoint(first, checkpoint("J1", 2, 9))  # older than the one held: ignored
    await h.dep.job_ended(first, DIED)
    await settle(lambda: len(h.supervisor.assigned) == 2)
    (uid1, request1, _), (uid2, request2, _) = h.supervisor.assigned
    assert uid2 != uid1
    assert (first.pod, 0) in h.pods.deleted  # the dead pod goes, at once
    # the same LiveKit job, room and agent participant; a token minted for it, not LiveKit's
    assert agent.Job.FromString(request2.job).id == "J1"
    assert request2.participant_identity == request1.participant_identity
    assert request2.token != request1.token
    claims = jwt.decode(request2.token, "secret", algorithms=["HS256"])
    assert claims["sub"] == request1.participant_identity
    assert claims["video"]["room"] == "room-1"
    assert request2.url == "ws://livekit.test"
    assert request2.restarts == 1
    assert request2.restored_seq == 3
    assert json.loads(request2.restored_state)["turn"] == 2
    assert h.reports.updates == []  # LiveKit hears nothing of the death
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.phase is Phase.STARTING
    # the new runner starts it: a JobRestarted Event, not a second start
    await h.dep.job_started(h.supervisor.records[uid2])
    await settle(lambda: any(r == "JobRestarted" for r, _ in h.events.recorded))
    (said,) = [m for r, m in h.events.recorded if r == "JobRestarted"]
    assert f"restarted on pod {h.supervisor.records[uid2].pod.name}" in said
    assert "exited" in said
    assert h.dep.ends.counts["jobsStarted"] == 1
    # its next end is its end: reported once
    await h.dep.job_ended(h.supervisor.records[uid2], JobOutcome(OutcomeStatus.SUCCESS, "room closed"))
    await settle(lambda: h.reports.updates)
    assert h.reports.updates == [("J1", agent.JS_SUCCESS, "")]


async def test_the_death_after_the_last_allowed_restart_fails_the_job_saying_why() -> None:
    h = harness(spec(failover={"maxRestarts": 1, "window": "10m"}))
    first = await running(h)
    await h.dep.job_ended(first, DIED)
    await settle(lambda: len(h.supervisor.assigned) == 2)
    second = h.supervisor.records[h.supervisor.assigned[1][0]]
    await h.dep.job_started(second)
    await h.dep.job_ended(second, JobOutcome(OutcomeStatus.FAILED, "OOMKilled", "over 64Mi", death=DEATH_OOM))
    await settle(lambda: h.reports.updates)
    ((job_id, status, error),) = h.reports.updates
    assert (job_id, status) == ("J1", agent.JS_FAILED)
    assert "not restarted: 1 restarts within 600s" in error
    assert len(h.supervisor.assigned) == 2
    assert "J1" not in h.dep.jobs


@pytest.mark.parametrize(
    "outcome",
    [
        JobOutcome(OutcomeStatus.SUCCESS, "room disconnected"),
        JobOutcome(OutcomeStatus.FAILED, "entrypoint failed", "ValueError: boom"),
        JobOutcome(OutcomeStatus.SUCCESS, "shut down on request"),
    ],
    ids=["room-closed", "entrypoint-failed", "asked"],
)
async def test_a_job_that_ended_by_itself_is_never_restarted(outcome: JobOutcome) -> None:
    h = harness()
    first = await running(h)
    await h.dep.job_ended(first, outcome)
    await settle(lambda: h.reports.updates)
    assert len(h.supervisor.assigned) == 1
    assert h.reports.updates[0][0] == "J1"


async def test_failover_off_fails_the_job_as_before() -> None:
    h = harness(spec(failover={"enabled": False}))
    first = await running(h)
    await h.dep.job_ended(first, DIED)
    await settle(lambda: h.reports.updates)
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_FAILED)]
    assert len(h.supervisor.assigned) == 1


def test_the_verdict() -> None:
    settings = spec(failover={"maxRestarts": 2, "window": "60s"})
    job = Job("J1", "room", Phase.RUNNING)
    assert verdict(job, DIED, settings, draining=False, now=100.0).restart
    assert not verdict(
        job, JobOutcome(OutcomeStatus.FAILED, "entrypoint failed"), settings, False, 100.0
    ).restart
    assert verdict(job, DIED, settings, draining=True, now=100.0).why == "draining"
    starting = Job("J1", "room", Phase.STARTING)  # it never started: it fails as before
    assert not verdict(starting, DIED, settings, draining=False, now=100.0).restart
    job.restarts = [10.0, 50.0]
    assert verdict(job, DIED, settings, False, now=100.0).restart  # the one at 10 s is out of the window
    assert verdict(job, DIED, settings, False, now=60.0).why == "budget"


async def test_a_checkpoint_from_a_pod_that_is_not_the_jobs_is_ignored() -> None:
    h = harness()
    first = await running(h)
    other = h.supervisor.records[first.pod.uid]
    stranger = JobRecord(
        "J1",
        "room-1",
        other.binding.__class__(
            other.pod.__class__("ns", "someone-else", "uid-x"), other.deployment, other.binding.heartbeat
        ),
        0.0,
    )
    h.dep.job_checkpoint(stranger, checkpoint("J1", 5, 7))
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.checkpoint is None


async def test_livekits_termination_for_the_agent_that_left_does_not_end_the_restarted_job() -> None:
    """livekit-server answers the dead agent leaving the room with a JobTermination (AGENT_LEFT_ROOM):
    right after a restart it is not applied; a termination later on is."""
    h = harness()
    first = await running(h)
    await h.dep.job_ended(first, DIED)
    await settle(lambda: len(h.supervisor.assigned) == 2)
    await h.dep.termination(agent.JobTermination(job_id="J1"))
    await settle()
    assert h.supervisor.shutdowns == []
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    entry.restarts[-1] -= 31  # the restart was long ago: LiveKit means it
    await h.dep.termination(agent.JobTermination(job_id="J1"))
    await settle(lambda: h.supervisor.shutdowns)
    assert h.supervisor.shutdowns[0][0] == h.supervisor.assigned[1][0]
