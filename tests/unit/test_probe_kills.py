"""A job whose container the kubelet stopped for a failed liveness probe fails, with that reason.

The runner shuts down on the kubelet's SIGTERM as on a pod deletion, so its word (a clean
shutdown) is held until the pod's status and Events say which it was."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from agent_jobrunner.protocol import pb
from agent_operator.kube.pod_failures import probe_failure, probe_killable
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from agent_operator.supervisor.job_machine import JobMachine
from agent_operator.supervisor.slots import PodSlot
from tests.unit.test_supervisor_forget import Outcomes, Refuses, Terminations, start_request

pytestmark = pytest.mark.unit

# what the v1.36 kubelet wrote for a job pod (restartPolicy Never) whose liveness probe failed,
# as listed on the real node (tests/e2e/test_node_features.py): the kill does not name the probe
UNHEALTHY = {"reason": "Unhealthy", "type": "Warning", "message": "Liveness probe failed: no /app/ok"}
STOPPING = {
    "reason": "Killing",
    "type": "Normal",
    "message": "Stopping container agent",
    "involvedObject": {"kind": "Pod", "fieldPath": "spec.containers{agent}"},
}
# and for a container it restarts (restartPolicy Always/OnFailure, or a container's own policy)
RESTARTING = {
    "reason": "Killing",
    "type": "Normal",
    "message": "Container agent failed liveness probe, will be restarted",
}


@pytest.mark.parametrize("kill", [STOPPING, RESTARTING], ids=["pod-stopped", "container-restarted"])
def test_the_kubelets_events_of_a_liveness_kill_fail_the_job_saying_what_to_fix(kill: dict[str, Any]) -> None:
    failure = probe_failure([{"reason": "Scheduled", "message": "assigned"}, UNHEALTHY, kill])
    assert failure is not None
    assert failure.reason == "LivenessProbeFailed"
    assert "container agent " in failure.message
    assert "Liveness probe failed: no /app/ok" in failure.message
    assert "livenessProbe" in failure.message


def test_a_startup_probe_kill_is_named_as_such() -> None:
    kill = {"reason": "Killing", "message": "Container agent failed startup probe, will be restarted"}
    failure = probe_failure([kill])
    assert failure is not None
    assert failure.reason == "StartupProbeFailed"


@pytest.mark.parametrize(
    "events",
    [
        [],
        [UNHEALTHY],  # failing, not yet killed
        [STOPPING],  # stopped with no probe failing (the pod's deletion)
        [{"reason": "Unhealthy", "message": "Readiness probe failed: 503"}, STOPPING],  # not ready
    ],
)
def test_no_probe_kill_without_a_kill_after_a_liveness_probe_failed(events: list[dict[str, Any]]) -> None:
    assert probe_failure(events) is None


def _pod(probe: bool = True, terminated: bool = True, deleting: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "agent", "image": "a:1"}
    if probe:
        container["livenessProbe"] = {"exec": {"command": ["true"]}}
    state = {"terminated": {"exitCode": 0, "reason": "Completed"}} if terminated else {"running": {}}
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T01:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [container]},
        "status": {"containerStatuses": [{"name": "agent", "state": state}]},
    }


def test_only_a_terminated_probed_container_of_a_pod_not_being_deleted_is_looked_into() -> None:
    assert probe_killable(_pod())
    assert not probe_killable(_pod(probe=False))
    assert not probe_killable(_pod(terminated=False))
    assert not probe_killable(_pod(deleting=True))


class Machine:
    """A job machine with one running job on one slot, its listener calls run as tasks."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()
        self.tasks: list[asyncio.Future[Any]] = []
        self.machine = JobMachine(
            self.outcomes, Terminations(), 60.0, asyncio.get_running_loop().time, self._call
        )
        pod = PodIdentity("ns", "voice-j1-ab", "uid-1")
        self.slot = PodSlot(
            RunnerBinding(pod, DeploymentRef("ns", "voice"), HeartbeatSettings(start_timeout=3600))
        )

    def _call(self, awaitable: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(awaitable))

    async def running(self) -> None:
        await self.machine.assign(self.slot, start_request("J1"), "cold")
        response = pb.RunnerMessage(start_job_response=pb.StartJobResponse(job_id="J1"))
        await self.machine.message(self.slot, Any, "start_job_response", response)  # type: ignore[arg-type]

    async def shutdown_response(self) -> None:
        msg = pb.RunnerMessage(shutdown_response=pb.ShutdownResponse(job_id="J1"))
        await self.machine.message(self.slot, Any, "shutdown_response", msg)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.slot.close_timers()
        await asyncio.gather(*self.tasks)


async def test_a_shutdown_nobody_asked_for_waits_for_the_pod_and_a_probe_kill_fails_the_job() -> None:
    m = Machine()
    await m.running()
    await m.shutdown_response()
    await asyncio.sleep(0.05)
    assert m.outcomes.ended == [], "held until the pod says why the runner was signalled"
    await m.machine.pod_failed(m.slot, "LivenessProbeFailed", "the kubelet stopped container agent")
    await m.machine.unit_exited(m.slot, "exit code 0, Completed")  # the exit that follows
    await m.close()
    [(job_id, outcome)] = m.outcomes.ended
    assert (job_id, outcome.status, outcome.reason) == ("J1", OutcomeStatus.FAILED, "LivenessProbeFailed")


async def test_a_shutdown_nobody_asked_for_succeeds_once_the_pod_exits_with_no_failure_found() -> None:
    m = Machine()
    await m.running()
    await m.shutdown_response()
    m.machine.detached(m.slot, "stream closed")  # the runner exits: no re-attach wait replaces the hold
    assert "reattach" not in m.slot.timers
    await m.machine.unit_exited(m.slot, "exit code 0, Completed")
    await m.close()
    [(_, outcome)] = m.outcomes.ended
    assert (outcome.status, outcome.reason) == (OutcomeStatus.SUCCESS, "shut down on a signal")


async def test_a_shutdown_the_operator_asked_for_succeeds_at_once() -> None:
    m = Machine()
    await m.running()
    asked = asyncio.create_task(m.machine.shutdown(m.slot, "draining", grace=30))
    await asyncio.sleep(0.01)
    await m.shutdown_response()
    outcome = await asked
    await m.close()
    assert outcome is not None
    assert (outcome.status, outcome.reason) == (OutcomeStatus.SUCCESS, "shut down on request")


async def test_a_runner_that_shut_down_for_its_pods_deletion_succeeds_when_the_pod_is_gone() -> None:
    """Someone deleted the pod mid-call: the runner shut down cleanly on the SIGTERM, and the
    pod's DELETED (no exit is reported for a pod being deleted) ends the job as that success."""
    outcomes = Outcomes()
    supervisor = Supervisor(Refuses(), Terminations(), listener=outcomes)
    pod = PodIdentity("ns", "voice-j3-ab", "uid-3")
    supervisor.expect(RunnerBinding(pod, DeploymentRef("ns", "voice"), HeartbeatSettings(start_timeout=3600)))
    await supervisor.assign(pod.uid, start_request("J3"))
    slot = supervisor._slots.get(pod.uid)
    assert slot is not None
    supervisor._machine.signalled(slot)
    await supervisor.forget(pod.uid)
    await asyncio.wait_for(outcomes.got.wait(), 5)
    await supervisor.stop()
    [(_, outcome)] = outcomes.ended
    assert (outcome.status, outcome.reason) == (OutcomeStatus.SUCCESS, "shut down on a signal")
