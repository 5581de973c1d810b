"""The Kubernetes API server briefly gone: the stop is real (the kube-apiserver process is
stopped, its port closed, then started again on the same port). Calls in progress do not
depend on it, and the operator picks up where it was once it is back."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from tests.support.operator import (
    Deployments,
    OperatorProcess,
    dispatch,
    ready_deployment,
    status_equals,
    wait_participant,
)
from tests.testenv.environment import TestEnvironment
from tests.testenv.kubeclient import eventually
from tests.testenv.livekit import LiveKitAccess

pytestmark = pytest.mark.e2e

DOWN_FOR = 8.0


async def test_call_survives_an_api_server_outage_and_the_operator_carries_on(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    test_env: TestEnvironment,
) -> None:
    if test_env.cluster is None:
        pytest.skip("needs the local kube-apiserver to stop and start")
    body = await ready_deployment(deployments, operator, k8s, livekit, "outage", "beacon_forever")
    agent_name = body["spec"]["agentName"]
    first = f"first-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, first)
    agent = await wait_participant(lk, first, "agent-")

    t0 = time.monotonic()
    restart = asyncio.create_task(asyncio.to_thread(test_env.cluster.restart_apiserver, DOWN_FOR))
    await asyncio.sleep(DOWN_FOR / 2)
    during = await wait_participant(lk, first, "agent-", timeout=10)
    assert during.sid == agent.sid, "the call does not need the API server"
    assert operator.alive(), "the operator rides out the outage"
    await restart
    print(f"kube-apiserver down and back in {time.monotonic() - t0:.1f}s")

    # back: the operator's watches resume; a new job gets a pod; outcomes reach the status
    second = f"second-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, second)
    await wait_participant(lk, second, "agent-", timeout=120)
    again = await wait_participant(lk, first, "agent-", timeout=10)
    assert again.sid == agent.sid
    for room in (first, second):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "outage", "jobsSucceeded", 2, timeout=120)

    async def pods_removed() -> bool:
        return not await deployments.pods("outage")

    await eventually(pods_removed, 60, "finished pods removed")
    assert operator.alive()
