"""A deleted deployment's drain, with fakes of its collaborators (issue 14, defect 11): the
runners are shut down all at once, ``Drained`` is told only when no pod is left, an
operator that stops mid-drain leaves it for the next one (same deadline), and an
assignment that arrives meanwhile is refused with LiveKit told."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from livekit.protocol import agent

from agent_operator import drain
from agent_operator.runtime import DrainInterrupted, OperatorConfig, OperatorRuntime
from agent_operator.supervisor import JobOutcome
from agent_operator.vocabulary import PodIdentity
from tests.support.deployment_fakes import Gate, Harness, assignment, offer, settle, spec
from tests.support.deployment_fakes import harness as plain_harness

pytestmark = pytest.mark.unit


class SlowShutdowns:
    """The supervisor's shutdown_job held open (a runner winding down for its grace)."""

    def __init__(self, h: Harness) -> None:
        self.gate = Gate()
        self.gate.close()
        self.calls: list[str] = []
        real = h.supervisor.shutdown_job

        async def shutdown_job(pod_uid: str, reason: str, grace: float) -> JobOutcome | None:
            self.calls.append(pod_uid)
            await self.gate.passed()
            return await real(pod_uid, reason, grace)

        h.supervisor.shutdown_job = shutdown_job  # type: ignore[method-assign]


async def running(h: Harness, *job_ids: str) -> list[PodIdentity]:
    pods = []
    for job_id in job_ids:
        h.dep.availability(offer(job_id, room=f"room-{job_id}"))
        await h.dep.assignment(assignment(job_id, room=f"room-{job_id}"))
    await settle(lambda: len(h.supervisor.assigned) == len(job_ids))
    for job_id in job_ids:
        entry = h.dep.jobs.get(job_id)
        assert entry is not None
        assert entry.pod is not None
        pods.append(entry.pod)
        h.supervisor.attached_uids.add(entry.pod.uid)
    return pods


def harness(deployment_spec: Any = None) -> Harness:
    """The deployment harness; its worker also counts the status updates sent at once."""
    h = plain_harness(deployment_spec)
    sent: list[bool] = []

    async def send_status() -> None:
        sent.append(True)

    async def close() -> None:
        return None

    async def stay_registered(*args: Any) -> None:
        """Registration.run as it is once registered: until told to unregister."""
        until: asyncio.Event = args[3]
        await until.wait()

    cast(Any, h.reports).send_status = send_status
    cast(Any, h.reports).statuses = sent
    cast(Any, h.reports).close = close
    cast(Any, h.dep.registration).run = stay_registered
    return h


def listed(pod: PodIdentity) -> dict[str, object]:
    return {
        "metadata": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
        "spec": {"terminationGracePeriodSeconds": 0},
    }


def reasons(h: Harness) -> list[str]:
    return [reason for reason, _ in h.events.recorded]


async def test_the_runners_are_shut_down_at_once_not_one_after_another() -> None:
    """Three running jobs and the drain deadline passed: all three ShutdownRequests are out
    before the first runner has finished winding down (one grace for all, not three)."""
    h = harness()
    await running(h, "J1", "J2", "J3")
    slow = SlowShutdowns(h)
    task = asyncio.create_task(drain.shut_down_all(h.dep.jobs.with_pod, h.dep.services, h.dep.fields))
    try:
        await settle(lambda: slow.gate.waiting == 3, timeout=2)
    finally:
        slow.gate.open()
        await task
    assert sorted(slow.calls) == sorted(p.uid for p in h.pods.created)


async def test_drained_is_told_only_once_the_last_pod_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    h = harness()
    pods = await running(h, "J1")
    h.pods.listed = [listed(pods[0])]
    h.pods.delete_gate.close()  # the deletion is asked for; the pod is still there
    task = asyncio.create_task(h.dep._drain(time.time() - 3600))
    await settle(lambda: h.pods.delete_gate.waiting, timeout=2)
    await asyncio.sleep(0.1)
    assert "Drained" not in reasons(h)
    h.pods.listed = []  # the kubelet has removed it
    h.pods.delete_gate.open()
    assert await asyncio.wait_for(task, 5) is True
    assert reasons(h)[-1] == "Drained"


async def test_pods_that_never_go_are_named_in_a_warning_not_reported_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(drain, "PODS_GONE_MARGIN_SECONDS", 0.2)
    h = harness()
    stuck = PodIdentity("ns", "voice-stuck", "uid-stuck")  # on a node that is gone
    h.pods.listed = [listed(stuck)]
    assert await asyncio.wait_for(h.dep._drain(time.time() - 3600), 5) is False
    await settle()
    assert "Drained" not in reasons(h)
    ((message,),) = [(m,) for r, m in h.events.recorded if r == "DrainIncomplete"]
    assert "voice-stuck" in message


async def test_an_operator_stopping_mid_drain_leaves_the_jobs_and_pods_to_the_next() -> None:
    """SIGTERM during the drain: the drain stops at once, no runner is shut down and no pod
    deleted (the next operator re-adopts them), and it is not reported as drained."""
    h = harness(spec(drainTimeout="10m"))
    pods = await running(h, "J1")
    h.pods.listed = [listed(pods[0])]
    stopping, exiting = asyncio.Event(), asyncio.Event()
    stopping.set()
    run = asyncio.create_task(h.dep.run(stopping, deleted=time.time, exiting=exiting))
    await settle(lambda: "Draining" in reasons(h), timeout=2)
    exiting.set()
    await asyncio.wait_for(run, 5)
    assert h.dep.drain_result is None
    assert h.supervisor.shutdowns == []
    assert h.pods.deleted == []
    assert "Drained" not in reasons(h)


async def test_a_resumed_drain_keeps_the_deadline_of_the_deletion() -> None:
    """An operator taking over a drain whose deadline (deletionTimestamp + drainTimeout) has
    passed shuts the runners down at once rather than waiting a whole drainTimeout again."""
    h = harness(spec(drainTimeout="10m"))
    await running(h, "J1")
    await asyncio.wait_for(h.dep._drain(time.time() - 601), 5)
    assert [reason for _, reason in h.supervisor.shutdowns] == ["deployment deleted"]


async def test_a_resumed_drain_lets_adopted_runners_re_attach_before_shutting_them_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after a restart the runners are still re-attaching: each is asked to shut down
    once it is back (a graceful end), not killed when a grace without it runs out."""
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    h = harness()
    (pod,) = await running(h, "J1")
    h.supervisor.attached_uids.clear()
    task = asyncio.create_task(h.dep._drain(time.time() - 3600))
    await asyncio.sleep(0.2)
    assert h.supervisor.shutdowns == []
    h.supervisor.attached_uids.add(pod.uid)
    await asyncio.wait_for(task, 5)
    assert [uid for uid, _ in h.supervisor.shutdowns] == [pod.uid]


async def test_an_assignment_while_draining_is_refused_and_livekit_told() -> None:
    h = harness()
    h.dep.availability(offer("J1"))  # offered before the drain began
    h.dep.draining = True
    await h.dep.assignment(assignment("J1"))
    await settle()
    assert h.pods.created == []
    assert h.supervisor.assigned == []
    assert h.reports.updates == [("J1", agent.JS_FAILED, "the deployment is draining")]
    assert "J1" not in h.dep.jobs
    assert h.dep.capacity().reserved == 0


def operator_with(h: Harness) -> OperatorRuntime:
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    runtime.supervisor = cast(Any, h.supervisor)
    runtime.pods = cast(Any, h.pods)
    runtime.collaborators = lambda: h.dep.services  # type: ignore[method-assign]
    return runtime


BODY: dict[str, Any] = {
    "livekit": {"url": "ws://livekit.test", "credentialsSecretRef": {"name": "lk"}},
    "entrypoint": "agents.voice:entry",
    "template": {"spec": {"containers": [{"name": "agent", "image": "runner:dev"}]}},
}


async def test_a_restarted_operator_resumes_the_drain_of_a_deleted_deployment() -> None:
    """kopf runs no daemon for a resource already being deleted: the on-delete handler
    drains it itself (here: nothing left, so it is drained at once)."""
    h = harness()
    runtime = operator_with(h)
    owner = h.dep.owner
    drained = await asyncio.wait_for(runtime.finish_deletion(owner, BODY, 1, "2026-01-01T00:00:00Z"), 10)
    assert drained is True
    assert runtime.deployments == {}


async def test_the_delete_handler_keeps_the_finalizer_when_the_operator_stops_first() -> None:
    """The daemon drains; the on-delete handler waits for it. The operator stops first:
    the handler raises (kopf keeps the finalizer and retries on the next operator)."""
    h = harness(spec(drainTimeout="10m"))
    runtime = operator_with(h)
    runtime.deployments[("ns", "voice")] = h.dep
    await running(h, "J1")
    stopping = asyncio.Event()
    stopping.set()
    run = asyncio.create_task(h.dep.run(stopping, deleted=time.time, exiting=runtime.exiting))
    handler = asyncio.create_task(runtime.finish_deletion(h.dep.owner, BODY, 1, None))
    await settle(lambda: "Draining" in reasons(h), timeout=2)
    assert not handler.done()
    runtime.begin_exit()
    with pytest.raises(DrainInterrupted):
        await asyncio.wait_for(handler, 5)
    await asyncio.wait_for(run, 5)
    assert h.supervisor.shutdowns == []


async def test_a_drain_that_is_done_is_not_run_again_when_kopf_calls_once_more() -> None:
    """kopf may call the on-delete handler again before it sees its own patch: the drain is
    not redone (no second worker, no second Drained)."""
    h = harness()
    runtime = operator_with(h)
    owner = h.dep.owner
    assert await asyncio.wait_for(runtime.finish_deletion(owner, BODY, 1, None), 10) is True
    assert reasons(h).count("Drained") == 1
    assert await asyncio.wait_for(runtime.finish_deletion(owner, BODY, 1, None), 1) is True
    await settle()
    assert reasons(h).count("Drained") == 1
