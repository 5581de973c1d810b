"""A forged checkpoint is refused, in real pods on the real node: a job's runner that writes a
checkpoint for another job on its own stream (past the runner's API, as code that owns its pod
could) is refused (``checkpoints_total{result="not_its_job"}``), and when the other job's pod
dies, its restart gets its own last checkpoint, not the forged one."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.e2e.test_failover import FAILOVER, agent_again, busy_pod
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_ready,
    dispatch,
    metric_value,
    pid,
    starts_reported,
    wait_participant,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_a_checkpoint_forged_for_another_job_is_refused_and_never_restored(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = agent_deployment("forge", livekit, "tests.agents.node_agents:keep_or_forge", failover=FAILOVER)
    body = await create_ready(deployments, operator, k8s, livekit, body)
    agent_name = body["spec"]["agentName"]
    victim_room, forger_room = f"room-{uuid.uuid4().hex[:6]}", f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, victim_room, empty_timeout=300)
    victim = await wait_participant(lk, victim_room, "agent-")
    await starts_reported(deployments, "forge", 1)
    victim_pod = await busy_pod(deployments, "forge")
    victim_job = victim_pod.metadata.labels["agentoperator.dev/job-id"]

    async def kept() -> bool:  # the victim's own checkpoint, taken
        text = await operator.metrics()
        return metric_value(text, "agent_operator_checkpoints_total", deployment="forge", result="taken") >= 1

    await eventually(kept, 60, "the victim's checkpoint taken")
    await dispatch(lk, agent_name, forger_room, empty_timeout=300, metadata=f"forge:{victim_job}")
    await wait_participant(lk, forger_room, "agent-")

    async def refused() -> bool:
        text = await operator.metrics()
        value = metric_value(
            text, "agent_operator_checkpoints_total", deployment="forge", result="not_its_job"
        )
        return value == 1

    await eventually(refused, 60, "the forged checkpoint refused")

    async def said() -> bool:  # the forger's record comes after its checkpoint on the stream
        return f"forged a checkpoint for job {victim_job}" in operator.log_text()

    await eventually(said, 30, "the forger's own record of its forgery")
    os.kill(await pid(deployments, victim_pod), signal.SIGKILL)
    await agent_again(lk, victim_room, victim.identity, victim.sid, timeout=120)

    async def restored() -> bool:
        return "restarted 1 time(s), restored {'said': 'hello'}" in operator.log_text()

    await eventually(restored, 60, "the victim restarted with its own checkpoint")
    assert "restored {'said': 'forged'}" not in operator.log_text()
    for room in (victim_room, forger_room):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
