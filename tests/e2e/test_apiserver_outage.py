"""The Kubernetes API server briefly gone: the stop is real (the kube-apiserver process is
stopped, its port closed, then started again on the same port). Calls in progress do not
depend on it, a call dispatched meanwhile gets its pod once it is back, and the operator
picks up where it was."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.environment import TestEnvironment
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    answered_call,
    dispatch,
    ready_deployment,
    starts_reported,
    status_equals,
    wait_participant,
)

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
    worker_id = (await deployments.get("outage"))["status"]["workerId"]
    first, agent = await answered_call(lk, agent_name, "first")

    t0 = time.monotonic()
    restart = asyncio.create_task(asyncio.to_thread(test_env.cluster.restart_apiserver, DOWN_FOR))
    await asyncio.sleep(DOWN_FOR / 2)
    during = await wait_participant(lk, first, "agent-", timeout=10)
    assert during.sid == agent.sid, "the call does not need the API server"
    # a call dispatched now: LiveKit assigns it, its pod cannot be created yet
    second = f"second-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, second)
    assert operator.alive(), "the operator rides out the outage"
    await restart
    back = time.monotonic() - t0
    print(f"kube-apiserver down and back in {back:.1f}s")

    # back: the pod of the call dispatched during the outage is created (retried, within the
    # job's start timeout) and the call is answered; watches resume; outcomes reach the status
    await wait_participant(lk, second, "agent-", timeout=120)
    late = time.monotonic() - t0 - back
    print(f"call dispatched during the outage answered {late:.1f}s after the API server was back")
    third = f"third-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, third)
    await wait_participant(lk, third, "agent-", timeout=120)
    again = await wait_participant(lk, first, "agent-", timeout=10)
    assert again.sid == agent.sid
    await starts_reported(deployments, "outage", 3)
    for room in (first, second, third):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "outage", "jobsSucceeded", 3, timeout=120)
    status = (await deployments.get("outage"))["status"]
    assert status.get("jobsFailed", 0) == 0
    assert status["workerId"] == worker_id, "the deployment's runtime and worker never restarted"
    assert "Daemon 'serve' failed" not in operator.log_text()
    retries = [
        json.loads(line)
        for line in operator.log_text().splitlines()
        if line.startswith("{") and "creating pod failed" in line
    ]
    assert retries, "the pod of the call dispatched during the outage was retried"
    status_warnings = operator.log_text().count("could not write status")
    assert status_warnings <= 6, f"{status_warnings} status warnings: backing off, not twice a second"
    for line in retries:  # job lines carry the job's fields
        assert line["room"] == second
        assert line["job_id"].startswith("AJ_")
        assert line["pod"].startswith(f"{deployments.namespace}/outage-")
        assert line["deployment"] == f"{deployments.namespace}/outage"

    async def pods_removed() -> bool:
        return not await deployments.pods("outage")

    await eventually(pods_removed, 60, "finished pods removed")
    assert operator.alive()
