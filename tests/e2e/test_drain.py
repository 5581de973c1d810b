"""Deleting an AgentDeployment with live calls (issue 14, defect 11): the runners are shut
down together (one grace, not one per call), ``Drained`` comes only after the last pod is
gone, and an operator stopped mid-drain leaves it to the next one, which finishes it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    wait_participant,
)

pytestmark = pytest.mark.e2e

GRACE = 10  # the pods' terminationGracePeriodSeconds: how long each runner may wind down
# the agent keeps running through its shutdown: each runner takes its whole grace
SLOW_AGENT = "tests.agents.simple:ignores_cancellation"


async def live_calls(
    deployments: Deployments,
    operator: OperatorProcess,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    name: str,
    calls: int,
    drain_timeout: str,
) -> list[str]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = agent_deployment(name, livekit, SLOW_AGENT, drainTimeout=drain_timeout)
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = GRACE
    created = await deployments.create(body)
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True")
    rooms = [f"drain-{uuid.uuid4().hex[:6]}" for _ in range(calls)]
    for room in rooms:
        await dispatch(lk, created["spec"]["agentName"], room)
    await asyncio.gather(*(wait_participant(lk, room, "agent-", timeout=120) for room in rooms))
    return rooms


async def reasons(deployments: Deployments, name: str) -> list[str]:
    return [e.reason for e in await deployments.events(name)]


async def gone(deployments: Deployments, name: str) -> bool:
    try:
        await deployments.get(name)
    except ApiException as exc:
        return exc.status == 404
    return False


async def test_live_calls_are_shut_down_together_and_drained_comes_after_the_last_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    await live_calls(deployments, operator, k8s, livekit, lk, "drain3", 3, drain_timeout="1s")
    assert len(await deployments.pods("drain3")) == 3
    t0 = time.monotonic()
    await deployments.delete("drain3")
    last_pod_gone: float | None = None
    early: list[str] = []

    async def drained() -> bool:
        nonlocal last_pod_gone
        told = "Drained" in await reasons(deployments, "drain3")  # events first, then pods
        pods = [p.metadata.name for p in await deployments.pods("drain3")]
        if told and pods:
            early.extend(pods)
        if not pods and last_pod_gone is None:
            last_pod_gone = time.monotonic() - t0
        return told

    await eventually(drained, 150, "the Drained event", interval=0.5)
    assert early == [], f"Drained was told while these pods remained: {early}"
    assert last_pod_gone is not None
    print(f"deletion -> last of 3 pods gone: {last_pod_gone:.1f}s (grace {GRACE}s each, drainTimeout 1s)")
    # one after another would take at least 3 x GRACE
    assert last_pod_gone < 2 * GRACE + 5
    await eventually(lambda: gone(deployments, "drain3"), 60, "the deployment removed")
    assert "DrainIncomplete" not in await reasons(deployments, "drain3")


async def test_an_operator_stopped_mid_drain_leaves_it_to_the_next_one(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """SIGTERM during a drain: the operator exits promptly, the deployment (finalizer) and
    its running call stay; the next operator resumes the drain and completes it."""
    await live_calls(deployments, operator, k8s, livekit, lk, "drainr", 1, drain_timeout="10m")
    (pod,) = await deployments.pods("drainr")
    await deployments.delete("drainr")
    await eventually(lambda: _has(deployments, "drainr", "Draining"), 60, "the Draining event", interval=0.5)
    t0 = time.monotonic()
    assert operator.proc is not None
    operator.proc.terminate()
    await operator.wait_exited(60)
    print(f"SIGTERM during a drain -> operator exited: {time.monotonic() - t0:.1f}s")
    await asyncio.sleep(3)  # what a restarted operator (or kopf's last cycle) would do is done by now
    assert not await gone(deployments, "drainr"), "the drain's finalizer was dropped"
    (still,) = await deployments.pods("drainr")
    assert still.metadata.uid == pod.metadata.uid
    assert still.metadata.deletion_timestamp is None  # the call goes on meanwhile
    # the rest of the drain is quick now (the spec of a resource being deleted may change)
    await deployments.patch("drainr", {"spec": {"drainTimeout": "1s"}})
    successor = OperatorProcess(
        operator.kubeconfig,
        operator.namespaces,
        operator.log_path.with_name(operator.log_path.stem + "-next.log"),
        runner_port=operator.runner_port,
    )
    successor.start()
    try:
        await eventually(lambda: _has(deployments, "drainr", "Drained"), 120, "Drained by the next operator")
        await eventually(lambda: gone(deployments, "drainr"), 60, "the deployment removed")
        assert "resuming the drain" in successor.log_text()
    finally:
        successor.stop()


async def _has(deployments: Deployments, name: str, reason: str) -> bool:
    return reason in await reasons(deployments, name)
