"""Issue 15, "Operator SIGKILLed between the pod's death and the restart: the restart still
happens": a restarted operator that lists a job pod whose runner died while no operator
watched finishes the failover, from what the pod keeps (the signed start request with its
restart count, the sealed checkpoint). The pods listed are the ones a first operator (a
harness of its own) made and annotated, then "died" by their status."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any, cast

import jwt
import pytest
from livekit.protocol import agent

from agent_operator import adoption, resume
from agent_operator.failover_record import died_of, restart_times
from agent_operator.kube.pod_checkpoint import ANNOTATION_CHECKPOINT, checkpoint_key, open_sealed, seal
from agent_operator.kube.podspec import ANNOTATION_START, Owner
from agent_operator.supervisor import JobRecord
from agent_operator.supervisor.types import DEATH_EXITED, DEATH_OOM, DEATH_POD_DELETED
from tests.support.deployment_fakes import Harness, assignment, harness, offer, settle, spec
from tests.unit.test_failover import DIED, checkpoint, running

pytestmark = pytest.mark.unit


def killed(code: int = 137, reason: str = "Error") -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": reason}
    phase = "Succeeded" if code == 0 else "Failed"
    return {"phase": phase, "containerStatuses": [{"name": "agent", "state": {"terminated": terminated}}]}


RUNNING: dict[str, Any] = {
    "phase": "Running",
    "containerStatuses": [{"name": "agent", "state": {"running": {}}}],
}


def found(first: Harness, record: JobRecord, status: dict[str, Any], created: str = "") -> dict[str, Any]:
    """The pod the first operator made for ``record``, with what it wrote to it since, as the
    next operator lists it."""
    uid = record.pod.uid
    body = copy.deepcopy(cast(dict[str, Any], first.pods.bodies[uid]))
    meta = body["metadata"]
    for pod, written in first.pods.annotated:
        if pod.uid == uid:
            meta["annotations"].update(written)
    # now, not when the module was imported: in the whole suite that is the e2e tests' half an
    # hour earlier, past the failover window, and a restart "at the pod's creation" no longer counts
    created = created or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta["uid"], meta["creationTimestamp"] = uid, created
    body["status"] = status
    return body


async def restarted_once(first: Harness) -> tuple[JobRecord, JobRecord]:
    """The first operator ran J1, restarted it once on a new pod (a live failover), and the
    new pod's runner sent a checkpoint, written to the new pod."""
    one = await running(first)
    first.dep.job_checkpoint(one, checkpoint("J1", 3, 2))
    await first.dep.job_ended(one, DIED)
    await settle(lambda: len(first.supervisor.assigned) == 2)
    two = first.supervisor.records[first.supervisor.assigned[1][0]]
    await first.dep.job_started(two)
    first.dep.job_checkpoint(two, checkpoint("J1", 5, 3))
    await settle(lambda: any(p == two.pod for p, _ in first.pods.annotated))
    await first.dep.failover.close()  # then it was SIGKILLed
    return one, two


@pytest.fixture
def room_there(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []

    async def exists(url: str, key: str, secret: str, room: str) -> bool:
        asked.append(room)
        return room != "gone"

    monkeypatch.setattr(adoption, "room_exists", exists)
    return asked


async def test_a_job_whose_pod_died_unwatched_is_restarted_with_the_checkpoint_its_pod_kept(
    room_there: list[str],
) -> None:
    first = harness()
    _, two = await restarted_once(first)
    dead = found(first, two, killed(137))
    then = harness()  # the next operator
    then.pods.listed = [dead]
    await then.dep.adoption.adopt_existing_pods()
    await then.dep.pod_gone(two.pod, dead, deleted=False)  # the pod watch tells of it as well
    await settle(lambda: then.supervisor.assigned)
    await settle()
    assert len(then.supervisor.assigned) == 1, "restarted once, not twice"
    ((uid, request, _),) = then.supervisor.assigned
    assert uid != two.pod.uid
    assert agent.Job.FromString(request.job).id == "J1"
    assert request.participant_identity == first.supervisor.assigned[0][1].participant_identity
    assert request.restarts == 2, "the one before the operator's restart, and this one"
    assert request.restored_seq == 5
    assert json.loads(request.restored_state)["turn"] == 3
    claims = jwt.decode(request.token, "secret", algorithms=["HS256"])
    assert claims["video"]["room"] == "room-1"
    assert (two.pod, 0) in then.pods.deleted, "the dead pod goes"
    assert then.reports.updates == [], "LiveKit hears nothing"
    assert room_there == ["room-1"]
    # the new pod keeps the checkpoint and the count on for the next operator
    annotations = cast(dict[str, Any], then.pods.bodies[uid])["metadata"]["annotations"]
    owner = Owner("ns", "voice", "uid-voice")
    kept = open_sealed(checkpoint_key("secret"), owner, "J1", annotations[ANNOTATION_CHECKPOINT])
    assert kept is not None
    assert kept.seq == 5
    await then.dep.job_started(then.supervisor.records[uid])
    await settle(lambda: any(r == "JobRestarted" for r, _ in then.events.recorded))
    await then.dep.failover.close()


async def test_an_oom_killed_pod_found_at_start_restarts_its_job_too(room_there: list[str]) -> None:
    first = harness()
    one = await running(first)
    first.dep.job_checkpoint(one, checkpoint("J1", 1, 1))
    await settle(lambda: first.pods.annotated)
    await first.dep.failover.close()
    then = harness()
    then.pods.listed = [found(first, one, killed(137, "OOMKilled"))]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.supervisor.assigned)
    request = then.supervisor.assigned[0][1]
    assert (request.restarts, request.restored_seq) == (1, 1)
    assert then.reports.updates == []
    await then.dep.failover.close()


async def test_a_job_whose_budget_is_spent_is_failed_with_the_reason(room_there: list[str]) -> None:
    budget = spec(failover={"maxRestarts": 1, "window": "10m"})
    first = harness(budget)
    _, two = await restarted_once(first)
    then = harness(budget)
    then.pods.listed = [found(first, two, killed(137))]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.reports.updates)
    ((job_id, status, error),) = then.reports.updates
    assert (job_id, status) == ("J1", agent.JS_FAILED)
    assert "not restarted: 1 restarts within 600s" in error
    assert "unwatched" in error
    assert then.supervisor.assigned == []
    assert "J1" not in then.dep.jobs
    await then.dep.failover.close()


async def test_restarts_older_than_the_window_leave_the_budget_whole(room_there: list[str]) -> None:
    budget = spec(failover={"maxRestarts": 1, "window": "10m"})
    first = harness(budget)
    _, two = await restarted_once(first)
    then = harness(budget)
    then.pods.listed = [found(first, two, killed(137), created="2020-01-01T00:00:00Z")]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.supervisor.assigned)
    assert then.supervisor.assigned[0][1].restarts == 2
    await then.dep.failover.close()


async def test_a_dead_pod_whose_job_runs_on_a_newer_pod_is_only_deleted(room_there: list[str]) -> None:
    """The previous operator had made the job's next pod but not deleted the dead one yet:
    both carry the job's label. The live one is the job's; the dead one goes."""
    first = harness()
    one, two = await restarted_once(first)
    dead, live = found(first, one, killed(137)), found(first, two, RUNNING)
    then = harness()
    then.pods.listed = [dead, live]  # the dead one listed first
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: any(p == one.pod for p, _ in then.pods.deleted))
    await settle()
    entry = then.dep.jobs.get("J1")
    assert entry is not None
    assert entry.pod == two.pod, "the job is the live pod's, its runner expected to re-attach"
    assert two.pod.uid in then.supervisor.bindings
    assert then.supervisor.assigned == [], "no second restart"
    assert then.reports.updates == []
    assert [p for p, _ in then.pods.deleted] == [one.pod]
    # the live pod's record counts on: its restart so far, its checkpoint
    assert len(entry.restarts) == 1
    assert entry.checkpoint is not None
    assert entry.checkpoint.seq == 5
    await then.dep.failover.close()


async def test_a_restarted_pod_whose_runner_never_got_the_job_is_resumed_with_its_checkpoint(
    room_there: list[str],
) -> None:
    """The previous operator made the restarted job's new pod and died before its runner got
    the job: the next operator resumes it from the pod, the conversation included."""
    first = harness()
    one = await running(first)
    first.dep.job_checkpoint(one, checkpoint("J1", 3, 2))
    await first.dep.job_ended(one, DIED)
    await settle(lambda: len(first.supervisor.assigned) == 2)
    two = first.supervisor.records[first.supervisor.assigned[1][0]]
    await first.dep.failover.close()
    then = harness()
    then.dep.registration.credentials_ready.set()
    then.pods.listed = [found(first, two, RUNNING)]
    await then.dep.adoption.adopt_existing_pods()
    then.supervisor.attached_uids.add(two.pod.uid)
    then.dep.runner_attached(two.pod, idle=True)
    await settle(lambda: then.supervisor.assigned)
    ((uid, request, path),) = then.supervisor.assigned
    assert (uid, path) == (two.pod.uid, "resumed")
    assert request.restarts == 1
    assert request.restored_seq == 3
    assert json.loads(request.restored_state)["turn"] == 2
    await then.dep.failover.close()


async def test_a_checkpoint_moved_from_another_jobs_pod_is_refused(
    room_there: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Someone who may patch pods copies another call's checkpoint onto the dead pod: the
    job restarts, without it."""
    first = harness()
    one = await running(first)
    first.dep.job_checkpoint(one, checkpoint("J1", 1, 1))
    await settle(lambda: first.pods.annotated)
    await first.dep.failover.close()
    dead = found(first, one, killed(137))
    owner = Owner("ns", "voice", "uid-voice")
    other = seal(checkpoint_key("secret"), owner, checkpoint("J2", 8, 8))
    dead["metadata"]["annotations"][ANNOTATION_CHECKPOINT] = other
    then = harness()
    then.pods.listed = [dead]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.supervisor.assigned)
    request = then.supervisor.assigned[0][1]
    assert request.restarts == 1
    assert (request.restored_state, request.restored_seq) == (b"", 0)
    assert any("checkpoint its pod keeps is not genuine" in r.getMessage() for r in caplog.records)
    await then.dep.failover.close()


async def test_a_pod_whose_record_was_rewritten_is_never_restarted_from(room_there: list[str]) -> None:
    """The restart count is signed: a pod rewritten to claim no restarts (to escape the
    budget) is not trusted, and left alone."""
    first = harness()
    _, two = await restarted_once(first)
    dead = found(first, two, killed(137))
    annotations = dead["metadata"]["annotations"]
    kept = resume.decode(annotations[ANNOTATION_START])
    assert kept is not None
    kept.restarts = 0
    annotations[ANNOTATION_START] = resume.encode(kept)
    then = harness()
    then.pods.listed = [dead]
    await then.dep.adoption.adopt_existing_pods()
    await settle()
    assert then.supervisor.assigned == []
    assert then.pods.deleted == []
    assert then.reports.updates == []
    assert then.dep.trust.distrusts(two.pod)


async def test_a_job_whose_room_is_gone_is_not_restarted(room_there: list[str]) -> None:
    first = harness()
    first.dep.availability(offer("J1", "gone"))
    await first.dep.assignment(assignment("J1", "gone"))
    await settle(lambda: first.supervisor.assigned)
    uid = first.supervisor.assigned[0][0]
    record = first.supervisor.records[uid]
    then = harness()
    then.pods.listed = [found(first, record, killed(137))]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.reports.updates)
    ((job_id, status, error),) = then.reports.updates
    assert (job_id, status) == ("J1", agent.JS_FAILED)
    assert "its room is gone" in error
    assert then.supervisor.assigned == []


@pytest.mark.parametrize(
    ("status", "reported"),
    [(killed(0, "Completed"), agent.JS_SUCCESS), (killed(1), agent.JS_FAILED)],
    ids=["exit-0-success", "exit-1-the-runner-failed-the-job"],
)
async def test_a_pod_whose_runner_ended_the_job_itself_is_not_restarted(
    room_there: list[str], status: dict[str, Any], reported: int
) -> None:
    """As before this change (a guard, not new behaviour): exit 0 is a success; exit 1 is the
    runner's own failure of the job (its entrypoint raised), never restarted."""
    first = harness()
    one = await running(first)
    first.dep.job_checkpoint(one, checkpoint("J1", 1, 1))
    await settle(lambda: first.pods.annotated)
    await first.dep.failover.close()
    then = harness()
    then.pods.listed = [found(first, one, status)]
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.reports.updates)
    assert [(j, s) for j, s, _ in then.reports.updates] == [("J1", reported)]
    assert then.supervisor.assigned == []


def test_what_a_finished_pod_died_of() -> None:
    assert died_of({"status": killed(137)}) == DEATH_EXITED
    assert died_of({"status": killed(139)}) == DEATH_EXITED
    assert died_of({"status": killed(137, "OOMKilled")}) == DEATH_OOM
    assert died_of({"status": {"phase": "Failed", "reason": "Evicted"}}) == DEATH_POD_DELETED
    for code in (0, 1, 2, 3, 4):  # the runner's own exit codes
        assert died_of({"status": killed(code)}) == ""


def test_kept_restarts_count_as_late_as_they_can_have_been() -> None:
    now, wall = 1000.0, 1_800_000_000.0
    created = datetime.datetime.fromtimestamp(wall - 30, datetime.UTC).isoformat()
    assert restart_times(2, created, now, wall) == [970.0, 970.0]
    assert restart_times(1, None, now, wall) == [1000.0]
    assert restart_times(0, created, now, wall) == []
    assert restart_times(1, "not a time", now, wall) == [1000.0]


@pytest.mark.parametrize("deployment_running", [True, False], ids=["deployment-up", "deployment-not-yet"])
async def test_a_dead_job_pod_the_watch_tells_of_before_the_listing_is_restarted_not_deleted(
    room_there: list[str], deployment_running: bool
) -> None:
    """The pod watch of a restarted operator delivers the dead job pod before its deployment
    lists the pods (seen on the real node: the runtime deleted it as a finished pod nobody held,
    and the job was lost). It is left to the deployment, which restarts the job from it."""
    from agent_operator.runtime import OperatorConfig, OperatorRuntime

    first = harness()
    _, two = await restarted_once(first)
    dead = found(first, two, killed(137))
    then = harness()
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    if deployment_running:  # else the pod watch is faster than the deployment's daemon (CI)
        runtime.deployments[("ns", "voice")] = then.dep
    runtime.supervisor = cast(Any, then.supervisor)
    runtime.pods = cast(Any, then.pods)
    await runtime.on_pod_event("MODIFIED", dead)  # before the listing
    await settle()
    # the API server lists it only if nobody deleted it meanwhile
    then.pods.listed = [dead] if two.pod not in [pod for pod, _ in then.pods.deleted] else []
    await then.dep.adoption.adopt_existing_pods()
    await settle(lambda: then.supervisor.assigned)
    await settle()
    assert len(then.supervisor.assigned) == 1, "restarted once"
    ((uid, request, _),) = then.supervisor.assigned
    assert uid != two.pod.uid
    assert request.restored_seq == 5
    assert then.reports.updates == []
    await then.dep.failover.close()
