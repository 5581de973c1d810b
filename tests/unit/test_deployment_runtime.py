"""The deployment runtime with fakes of its collaborators: one record per job, one guarded
exit, placement behind one call, and the defects of issue 14 that live here."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import agent

from agent_operator.jobs import Phase
from agent_operator.pool_plan import PoolPod
from agent_operator.supervisor import JobOutcome, OutcomeStatus
from agent_operator.vocabulary import PodIdentity
from agent_operator.worker import WorkerConnection, WorkerOptions
from tests.support.deployment_fakes import assignment, harness, offer, ours, settle, spec

pytestmark = pytest.mark.unit


def pool_pod(uid: str, template_hash: str, attached: bool = True, created: float = 0.0) -> PoolPod:
    return PoolPod(
        uid, f"pool-{uid}", "ns", template_hash, created, attached=attached, attached_once=attached
    )


async def test_a_job_is_reported_once_whichever_paths_end_it() -> None:
    """Defect 7: the pod disappears and the re-attach deadline passes for the same job (two
    paths that each used to report it): LiveKit hears one outcome."""
    h = harness()
    h.dep.availability(offer("J1"))
    await h.dep.assignment(assignment("J1"))
    await settle(lambda: h.supervisor.assigned)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.pod is not None
    h.supervisor.records.clear()  # as if its runner never attached
    await h.dep.pod_gone(entry.pod, None)
    await h.dep.ends.fail_unstarted(entry, "runner did not re-attach within 90s")
    await settle()
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_FAILED)]
    assert "J1" not in h.dep.jobs
    assert h.dep.ends.counts["jobsFailed"] == 1


async def test_a_termination_while_the_job_is_placed_ends_it_once_placed() -> None:
    """Defect 7: LiveKit's JobTermination arrives while the job's pod is being created; it is
    kept, and the runner is asked to shut down as soon as it has the job."""
    h = harness()
    h.dep.availability(offer("J1"))
    h.pods.create_gate.close()
    await h.dep.assignment(assignment("J1"))
    await settle(lambda: h.pods.create_gate.waiting)
    await h.dep.termination(agent.JobTermination(job_id="J1"))
    assert h.supervisor.shutdowns == []
    h.pods.create_gate.open()
    await settle(lambda: h.supervisor.shutdowns)
    ((uid, reason),) = h.supervisor.shutdowns
    assert uid == h.pods.created[0].uid
    assert "terminated by LiveKit" in reason


async def test_re_registering_does_not_cut_off_an_assignment_in_flight() -> None:
    """Defect 6: the worker connection that delivered the assignment is closed (a spec or
    Secret change re-registers) while the job's pod is being created; the job still gets
    its runner, and its slot is not left taken."""
    h = harness()
    connection = WorkerConnection(WorkerOptions(url="ws://livekit.test", api_key="k", api_secret="s"), h.dep)
    h.dep.availability(offer("J1"))
    h.pods.create_gate.close()
    await connection._dispatch(agent.ServerMessage(assignment=assignment("J1")))
    await settle(lambda: h.pods.create_gate.waiting)
    await connection.close()  # what a re-registration does to the old connection
    h.pods.create_gate.open()
    await settle(lambda: h.supervisor.assigned)
    ((uid, request, _),) = h.supervisor.assigned
    assert uid == h.pods.created[0].uid
    assert request.token == "jwt-J1"
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.phase is Phase.STARTING


async def test_the_participant_is_rendered_at_the_offer_and_carried_to_the_assignment() -> None:
    """Defect 4: the identity LiveKit was told at availability is the one the runner gets,
    even when the template changed in between."""
    h = harness(spec(participant={"identityTemplate": "agent-{job_id}-{room}"}))
    answer = h.dep.availability(offer("J1", "r1"))
    assert answer is not None
    assert answer.participant_identity == "agent-J1-r1"
    h.dep.update(spec(participant={"identityTemplate": "other-{job_id}"}), 2)
    await h.dep.assignment(assignment("J1", "r1"))
    await settle(lambda: h.supervisor.assigned)
    assert h.supervisor.assigned[0][1].participant_identity == "agent-J1-r1"


async def test_an_offer_whose_answer_fails_is_declined_and_the_connection_stays() -> None:
    """Defect 4: an error while answering one offer declines that offer; it never escapes
    the reader loop (which would close the worker WebSocket)."""

    class Broken:
        def availability(self, request: agent.AvailabilityRequest) -> agent.AvailabilityResponse | None:
            raise RuntimeError("boom")

    sent: list[bytes] = []

    class Socket:
        closed = False

        async def send_bytes(self, data: bytes) -> None:
            sent.append(data)

    connection = WorkerConnection(WorkerOptions(url="ws://x", api_key="k", api_secret="s"), Broken())  # type: ignore[arg-type]
    connection._ws = Socket()  # type: ignore[assignment]
    await connection._dispatch(agent.ServerMessage(availability=offer("J9")))
    (message,) = [agent.WorkerMessage.FromString(data) for data in sent]
    assert message.availability.job_id == "J9"
    assert not message.availability.available


async def test_a_job_placed_while_a_pool_pod_is_created_takes_that_pod() -> None:
    """Defect 3: the pool is creating its pod when a job comes; the job waits for that pod
    instead of creating one more (which made idle + busy exceed maxConcurrentJobs)."""
    h = harness(spec(maxConcurrentJobs=2, warmPool={"size": 1}, heartbeat={"startTimeout": "5s"}))
    h.dep.jobs.place("J0", "r0").phase = Phase.RUNNING  # one job busy: one slot left, for the pool
    h.pods.create_gate.close()
    reconcile = asyncio.ensure_future(h.dep.pool.reconcile())
    await settle(lambda: h.pods.create_gate.waiting)
    h.dep.availability(offer("J1"))
    await h.dep.assignment(assignment("J1"))
    await settle()
    h.pods.create_gate.open()
    await settle(lambda: h.supervisor.assigned)
    await reconcile
    assert len(h.pods.created) == 1, "no second pod: the job took the pool's"
    assert h.supervisor.assigned[0][0] == h.pods.created[0].uid


async def test_a_burst_never_creates_more_pods_than_max_concurrent_jobs() -> None:
    """Defect 3: offers, assignments, pool refills and job ends interleaved; the live pods
    (created and not deleted) never exceed maxConcurrentJobs."""
    h = harness(spec(maxConcurrentJobs=3, warmPool={"size": 2}))
    for round_ in range(6):
        await h.dep.pool.reconcile()
        for uid in list(h.dep.pool.pods):
            h.dep.pool.attached(uid)
        ids = [f"J{round_}-{i}" for i in range(3)]
        for job_id in ids:
            h.dep.availability(offer(job_id))
        for job_id in ids:
            if job_id in h.dep.jobs:
                await h.dep.assignment(assignment(job_id))
        await settle()
        # the calls end while LiveKit hears of it (an await) and the pool refills meanwhile
        h.reports.gate.close()
        ending = [
            asyncio.ensure_future(h.dep.ends.finish(entry, JobOutcome(OutcomeStatus.SUCCESS, "done")))
            for entry in h.dep.jobs
            if entry.pod is not None
        ]
        count = len(ending)
        await settle(lambda: h.reports.gate.waiting == count)  # noqa: B023 - awaited here
        await h.dep.pool.reconcile()
        h.reports.gate.open()
        await asyncio.gather(*ending)
    assert h.pods.peak <= 3, f"{h.pods.peak} pods at once"
    assert len(h.supervisor.assigned) >= 6


async def test_pool_cleanup_never_deletes_a_pod_that_was_just_given_a_job() -> None:
    """Defect 5: while the pool's cleanup deletes one pod (an await), a job takes a pod from
    the pool: never one the same cleanup is about to delete."""
    h = harness(spec(maxConcurrentJobs=2, warmPool={"size": 2}))
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    h.dep.pool.pods = {"a": pool_pod("a", current, created=1.0), "b": pool_pod("b", current, created=2.0)}
    h.dep.jobs.place("J0", "r0").phase = Phase.RUNNING
    h.dep.jobs.place("J1", "r1").phase = Phase.RUNNING  # the cap is reached: the pool shrinks to 0
    h.pods.delete_gate.close()
    task = asyncio.ensure_future(h.dep.pool.reconcile())
    await settle(lambda: h.pods.delete_gate.waiting)
    taken = h.dep.pool.take(current)
    h.pods.delete_gate.open()
    await task
    deleted = {pod.uid for pod, _ in h.pods.deleted}
    assert deleted == {"a", "b"}
    assert taken is None, f"the job got {taken.uid if taken else ''}, which the cleanup deletes"


async def test_an_adopted_job_whose_pod_exited_0_unwatched_is_a_success() -> None:
    """Defect 7: the runner ended its job while attached to the previous operator (or while
    none ran); its pod's exit code 0 says so, and LiveKit hears success, not failure."""
    h = harness()
    pod = PodIdentity("ns", "voice-j1-ab", "uid-1")
    body = ours(
        {
            "metadata": {
                "namespace": "ns",
                "name": pod.name,
                "uid": pod.uid,
                "labels": {"agentoperator.dev/deployment": "voice", "agentoperator.dev/job-id": "J1"},
                "annotations": {"agentoperator.dev/room": "r1"},
            },
            "status": {"phase": "Running"},
        }
    )
    h.dep.adoption.adopt(body)
    assert h.dep.jobs.get("J1") is not None
    final = {
        "status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]}
    }
    await h.dep.pod_gone(pod, final)
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J1", agent.JS_SUCCESS)]

    failed = harness()
    failed.dep.adoption.adopt(body)
    crashed = {
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}
    }
    await failed.dep.pod_gone(pod, crashed)
    ((job_id, status, error),) = failed.reports.updates
    assert (job_id, status) == ("J1", agent.JS_FAILED)
    assert "exit code 3" in error


async def test_a_pod_found_finished_after_a_restart_is_reported_by_its_exit_code() -> None:
    """Defect 7: a job pod that exited 0 while the operator was down is a success."""
    h = harness()
    h.dep.adoption.adopt(
        ours(
            {
                "metadata": {
                    "namespace": "ns",
                    "name": "voice-j2-ab",
                    "uid": "uid-2",
                    "labels": {"agentoperator.dev/deployment": "voice", "agentoperator.dev/job-id": "J2"},
                },
                "status": {"phase": "Succeeded"},
            }
        )
    )
    await settle(lambda: h.reports.updates)
    assert [(j, s) for j, s, _ in h.reports.updates] == [("J2", agent.JS_SUCCESS)]
    assert [pod.uid for pod, _ in h.pods.deleted] == ["uid-2"]


async def test_a_deployment_created_with_an_invalid_spec_is_blocked_at_once() -> None:
    """Defect 4: a spec that does not parse at creation (the first generation) used to leave
    the deployment "Connecting": the update with the error was taken for no change."""
    h = harness(registered=False)
    h.dep.spec = None
    h.dep.update(None, 1, "participant.identityTemplate: 'agent-{job_id': expected '}' before end of string")
    ready = {c.type: c for c in h.dep.conditions()}["Ready"]
    assert (ready.status, ready.reason) == (False, "InvalidSpec")
    assert "identityTemplate" in ready.message


async def test_after_a_restart_a_job_waits_for_an_adopted_pool_pod_rather_than_exceed_the_cap() -> None:
    """Defect 3 after a restart: the pool's adopted pods have not re-attached yet (they may
    serve the previous operator). A job that a new pod would put above maxConcurrentJobs
    waits for one of them instead, and takes it once it attached here."""
    h = harness(spec(maxConcurrentJobs=2, warmPool={"size": 1}))
    h.dep.jobs.place("J0", "r0").phase = Phase.RUNNING
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    adopted = PodIdentity("ns", "voice-pool-1", "adopted-1")
    h.dep.expect(adopted, h.dep.heartbeat())
    h.dep.pool.adopt(adopted, current, None)
    h.dep.availability(offer("J1"))
    await h.dep.assignment(assignment("J1"))
    await settle()
    assert h.pods.created == [], "no pod beyond the cap"
    assert h.supervisor.assigned == []
    h.dep.pool.attached("adopted-1")
    await settle(lambda: h.supervisor.assigned)
    assert h.supervisor.assigned[0][0] == "adopted-1"
    assert h.pods.created == []


async def test_the_job_counts_go_on_from_the_status_the_last_operator_wrote() -> None:
    """A deploy or restart used to start the status columns from zero (the demo showed
    jobsSucceeded 0 after a helm upgrade). A value that is not a count is ignored."""
    h = harness()
    h.dep.ends.carry({"jobsStarted": 5, "jobsSucceeded": "4", "jobsFailed": "many", "idlePods": 2})
    h.dep.availability(offer("J1"))
    await h.dep.assignment(assignment("J1"))
    await settle(lambda: h.supervisor.assigned)
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    await h.dep.ends.finish(entry, JobOutcome(OutcomeStatus.SUCCESS, "entrypoint finished"))
    assert h.dep.ends.counts == {"jobsStarted": 5, "jobsSucceeded": 5, "jobsFailed": 0}
    assert h.dep._snapshot().counts == h.dep.ends.counts
