"""A deploy whose next operator is slow to serve drops no dispatch.

On a loaded machine the next operator took 6.3 s from taking the Lease to registering its
LiveKit workers, and the leaving one declined each offer it held after 2 s: livekit-server
drops a job that every registered worker declined, so those calls got no agent. Here the
next operator is frozen (SIGSTOP) right after it took the Lease, before its workers
register, for longer than the hold: the leaving operator must answer those offers itself.
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
    OperatorProcess,
    deploy_under_way,
    dispatch,
    ready_deployment,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e

FREEZE_SECONDS = 6.0  # longer than the 2 s an offer is held, as long as the slow start measured
CALLS = 3


async def wait_logged(op: OperatorProcess, text: str, timeout: float) -> None:
    """Until ``text`` is in the operator's log; polled often, to act right after it."""
    deadline = time.monotonic() + timeout
    while text not in op.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged in {timeout:.0f}s\n{op.tail(40)}"
        await asyncio.sleep(0.02)


async def test_offers_while_the_next_operator_is_slow_to_serve_get_an_agent(
    kube: KubeAccess,
    ns: str,
    local_kubelet: TestEnvironment,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    logs = local_kubelet.workdir / "logs"
    async with deploy_under_way(kube.kubeconfig, ns, logs, lk, handover_timeout=30) as (old, new, rooms):
        body = await ready_deployment(
            deployments,
            old,
            k8s,
            livekit,
            "slow",
            "beacon_forever",
            maxConcurrentJobs=10,
            warmPool={"size": 4},
        )
        agent_name = body["spec"]["agentName"]
        await status_equals(deployments, "slow", "idlePods", 4, timeout=120)
        new.start()
        await new.wait_ready()
        assert await new.readyz() == "200 standby"

        assert old.proc is not None
        assert new.proc is not None
        old.proc.send_signal(signal.SIGTERM)
        await wait_logged(new, "took the leader Lease", 30)
        new.proc.send_signal(signal.SIGSTOP)  # the next operator, slow to start serving
        frozen = time.monotonic()
        try:
            for i in range(CALLS):
                room = f"slow-{i}-{uuid.uuid4().hex[:4]}"
                rooms.append(room)
                await dispatch(lk, agent_name, room)
                await asyncio.sleep(0.5)
            await asyncio.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen)))
        finally:
            new.proc.send_signal(signal.SIGCONT)
        assert await old.wait_exited(60) == 0, old.tail()

        results = await asyncio.gather(
            *(wait_participant(lk, room, "agent-", timeout=60) for room in rooms), return_exceptions=True
        )
        missing = [room for room, r in zip(rooms, results, strict=True) if isinstance(r, BaseException)]
        assert not missing, f"calls without an agent: {missing}\n--- old:\n{old.tail(60)}"
        answered = old.log_text().count("the next operator does not serve yet")
        print(f"{answered} of {CALLS} offers answered by the leaving operator while the next was frozen")
        assert answered == CALLS, old.tail(60)
        assert "passed the job on to the next operator" not in old.log_text()
