"""A deploy with leader election drops no dispatch: the next operator stands by, the old one
hands over on SIGTERM.

As a RollingUpdate does it: the new operator starts while the old one serves, and stands by
(ready, no LiveKit worker, no runner port). Then the old one gets SIGTERM while calls keep
being dispatched, four a second. Every call gets an agent, the running call keeps its
agent, and all end as successes. Without the handover (the rollout test, Recreate), calls
dispatched between the old operator's SIGTERM and the new one's registration get no agent.

Both operators share one runner port (gRPC sets SO_REUSEPORT), as two pods share a Service.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    deploy_under_way,
    dispatch,
    leader_and_standby,
    metric_value,
    ready_deployment,
    starts_logged,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e

CADENCE = 0.25  # a dispatch every 0.25 s through the deploy (it lasts about a second)
MAX_CALLS = 30  # within maxConcurrentJobs (40) with the first call, however slow the old one exits


# warm: calls go to idle pool pods, whose runners get the job on the stream at once. cold: a
# pod per call; a job whose runner had not attached when the old operator stopped is resumed
# by the new one from its pod (agent_operator.resume), if the race happens in the run.
@pytest.mark.parametrize("pool", [12, 0], ids=["warm", "cold"])
async def test_a_deploy_hands_over_without_dropping_a_dispatch(
    pool: int,
    kube: KubeAccess,
    ns: str,
    local_kubelet: TestEnvironment,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    logs = local_kubelet.workdir / "logs"
    async with deploy_under_way(kube.kubeconfig, ns, logs, lk, handover_timeout=15) as (old, new, rooms):
        body = await ready_deployment(
            deployments,
            old,
            k8s,
            livekit,
            "handover",
            "beacon_forever",
            maxConcurrentJobs=40,
            warmPool={"size": pool},
        )
        agent_name = body["spec"]["agentName"]
        old_worker = (await deployments.get("handover"))["status"]["workerId"]
        first = f"running-{uuid.uuid4().hex[:6]}"
        rooms.append(first)
        await dispatch(lk, agent_name, first)
        agent = await wait_participant(lk, first, "agent-")
        await status_equals(deployments, "handover", "idlePods", pool, timeout=120)

        # the new operator stands by: ready (so a rollout goes on), but serving nothing
        new.start()
        await new.wait_ready()
        assert await new.readyz() == "200 standby"
        assert metric_value(await new.metrics(), "agent_operator_leader") == 0
        assert metric_value(await old.metrics(), "agent_operator_leader") == 1
        await asyncio.sleep(2)
        assert (await deployments.get("handover"))["status"]["workerId"] == old_worker
        assert "took the leader Lease" not in new.log_text()

        # the deploy: SIGTERM to the old operator while calls keep coming
        calls: list[tuple[str, float]] = []

        enough = asyncio.Event()

        async def caller() -> None:
            while not enough.is_set() and len(calls) < MAX_CALLS:
                room = f"call-{len(calls)}-{uuid.uuid4().hex[:4]}"
                rooms.append(room)
                at = time.monotonic()
                await dispatch(lk, agent_name, room)
                calls.append((room, at))
                await asyncio.sleep(CADENCE)

        calling = asyncio.create_task(caller())
        try:
            await asyncio.sleep(0.5)
            assert old.proc is not None
            sigterm = time.monotonic()
            old.proc.send_signal(signal.SIGTERM)
            code = await old.wait_exited(40)
            exited = time.monotonic()
            await asyncio.sleep(1.0)
        finally:
            enough.set()
            await calling  # a dispatch is not cut in half
        assert code == 0, old.tail()
        during = [room for room, at in calls if sigterm <= at <= exited]
        print(
            f"old operator: SIGTERM -> exit {exited - sigterm:.2f}s; {len(calls)} calls dispatched, "
            f"{len(during)} between SIGTERM and exit"
        )
        assert during, "no call was dispatched during the handover"

        # every call got an agent: none was dispatched into a gap
        results = await asyncio.gather(
            *(wait_participant(lk, room, "agent-", timeout=60) for room, _ in calls), return_exceptions=True
        )
        missing = [room for (room, _), r in zip(calls, results, strict=True) if isinstance(r, BaseException)]
        assert not missing, (
            f"calls without an agent: {missing}\n--- old:\n{old.tail(60)}\n--- new:\n{new.tail(60)}"
        )
        still = await wait_participant(lk, first, "agent-", timeout=10)
        assert still.sid == agent.sid, "the running call kept its agent"

        status = (await deployments.get("handover"))["status"]
        assert status["workerId"] not in ("", old_worker), "the new operator's worker serves"
        assert await new.readyz() == "200 ready"
        assert metric_value(await new.metrics(), "agent_operator_leader") == 1
        handover = [line for line in old.log_text().splitlines() if "handover done" in line]
        assert handover, old.tail(80)
        assert "new serves after" in handover[-1], old.tail(80)
        for op in (old, new):
            assert '"level": "ERROR"' not in op.log_text(), op.tail(80)
        passed = old.log_text().count("passed the job on to the next operator")
        resumed = new.log_text().count("resumed the job")
        print(
            f"{handover[-1]}\noffers the old operator held and passed on: {passed}; jobs resumed: {resumed}"
        )

        await starts_logged([old, new], rooms)  # a call hung up before that would end as failed
        for room in rooms:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, "handover", "jobsSucceeded", len(rooms), timeout=120)
        assert (await deployments.get("handover"))["status"].get("jobsFailed", 0) == 0


async def test_a_standby_stopped_leaves_the_leader_alone(
    kube: KubeAccess, ns: str, local_kubelet: TestEnvironment, k8s: client.ApiClient
) -> None:
    """A rollout that is rolled back (or scaled down) stops the standby: it exits at once,
    and the leader keeps the Lease."""
    async with leader_and_standby(kube.kubeconfig, ns, local_kubelet.workdir / "logs") as (leader, standby):
        assert standby.proc is not None
        standby.proc.send_signal(signal.SIGTERM)
        assert await standby.wait_exited(20) == 0, standby.tail()
        assert "stopped while standing by" in standby.log_text()
        lease = await client.CoordinationV1Api(k8s).read_namespaced_lease("livekit-agent-operator", ns)
        assert lease.spec.holder_identity == "a"
        assert leader.alive()
        assert await leader.readyz() == "200 ready"
