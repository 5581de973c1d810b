"""A deploy of the operator drops no running call: the operator is stopped the way a rollout
stops it (SIGTERM), the call keeps going without it, the next operator adopts it, and calls
dispatched once it is up are answered; every call ends as a success.

This is the operator without leader election (Recreate). What such a restart cannot save
(measured, not asserted: it is livekit-server's behaviour): a dispatch created while no
worker of the agent name is registered is tried once and dropped by livekit-server v1.13.5.
The window is SIGTERM of the old operator to registration by the new one; the test prints
it. With leader election the window is closed: test_operator_handover.py.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    answered_call,
    dispatch,
    ready_deployment,
    starts_logged,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e


async def test_rollout_keeps_the_running_call_and_serves_calls_after_it(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await ready_deployment(deployments, operator, k8s, livekit, "rolling", "beacon_forever")
    agent_name = body["spec"]["agentName"]
    before_id = (await deployments.get("rolling"))["status"]["workerId"]
    first, agent = await answered_call(lk, agent_name, "before")

    stopped_at = time.monotonic()
    operator.stop()  # SIGTERM, as a Recreate rollout does
    assert not operator.alive()
    still = await wait_participant(lk, first, "agent-", timeout=10)
    assert still.sid == agent.sid, "the call went on without the operator"

    operator.start()

    async def registered_again() -> bool:
        status = (await deployments.get("rolling")).get("status") or {}
        return status.get("workerId") not in (None, "", before_id)

    await eventually(registered_again, 90, "the new operator's worker registered")
    gap = time.monotonic() - stopped_at
    print(f"no worker registered for {gap:.1f}s (SIGTERM of the old operator -> new worker registered)")

    after = f"after-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, after)
    await wait_participant(lk, after, "agent-")
    again = await wait_participant(lk, first, "agent-", timeout=10)
    assert again.sid == agent.sid, "the first call never lost its agent"
    assert len(await deployments.pods("rolling")) == 2, "the adopted call's pod and the new one"

    await starts_logged([operator], (first, after))
    for room in (first, after):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "rolling", "jobsSucceeded", 2, timeout=90)
    assert (await deployments.get("rolling"))["status"].get("jobsFailed", 0) == 0
