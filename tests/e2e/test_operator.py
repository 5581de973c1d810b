"""The operator end to end: a real ``agent-operator run`` process, the real API server
(PodSecurity ``restricted`` enforced on the namespace), the process kubelet running real
runners, and the real livekit-server dispatching jobs."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api

from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    install_crd,
    wait_participant,
)
from tests.testenv.environment import TestEnvironment
from tests.testenv.kube import KubeAccess
from tests.testenv.kubeclient import api_client, eventually
from tests.testenv.livekit import LiveKitAccess

pytestmark = pytest.mark.e2e

AGENTS = "tests.agents.stream_agents"


@pytest.fixture(scope="session")
def crd(kube: KubeAccess) -> None:
    async def install() -> None:
        async with await api_client(kube.kubeconfig) as api_:
            await install_crd(api_)

    asyncio.run(install())


@pytest.fixture
async def ns(namespace: str, k8s: client.ApiClient, crd: None) -> str:
    """The test namespace, enforcing the Pod Security Standard `restricted`."""
    await client.CoreV1Api(k8s).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    return namespace


@pytest.fixture
def operator(kube: KubeAccess, ns: str, local_kubelet: TestEnvironment) -> Iterator[OperatorProcess]:
    # in the session's log folder, which is kept when a test fails
    op = OperatorProcess(kube.kubeconfig, [ns], local_kubelet.workdir / "logs" / f"operator-{ns}.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
async def lk(livekit: LiveKitAccess) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lkapi:
        yield lkapi


@pytest.fixture
def deployments(k8s: client.ApiClient, ns: str) -> Deployments:
    return Deployments(k8s, ns)


async def _dispatch(lk: api.LiveKitAPI, agent_name: str, room: str) -> Any:
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=60))
    return await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=agent_name, room=room))


async def _ready_deployment(
    deployments: Deployments, operator: OperatorProcess, k8s: client.ApiClient, livekit: LiveKitAccess,
    name: str, entrypoint: str, **spec: Any,
) -> dict[str, Any]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit) if not spec.pop(
        "_no_secret", False) else None
    body = await deployments.create(agent_deployment(name, livekit, f"{AGENTS}:{entrypoint}", **spec))
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True", timeout=60)
    return body


async def test_dispatch_runs_one_pod_per_job_and_cleans_up(
    operator: OperatorProcess, deployments: Deployments, k8s: client.ApiClient, livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await _ready_deployment(deployments, operator, k8s, livekit, "voice", "beacon_forever")
    agent_name = body["spec"]["agentName"]
    room = f"room-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    await _dispatch(lk, agent_name, room)
    participant = await wait_participant(lk, room, "agent-")
    joined = time.monotonic() - t0
    print(f"create_dispatch -> agent joined (cold path): {joined:.2f}s")
    pods = await deployments.pods("voice")
    assert len(pods) == 1
    pod = pods[0]
    job_id = pod.metadata.labels["agentoperator.dev/job-id"]
    assert participant.identity == f"agent-{job_id}"
    assert pod.metadata.annotations["agentoperator.dev/room"] == room
    assert pod.metadata.owner_references[0].kind == "AgentDeployment"

    await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    async def gone() -> bool:
        return not await deployments.pods("voice")

    await eventually(gone, 60, "job pod removed")

    async def counted() -> dict[str, Any] | None:
        status = (await deployments.get("voice")).get("status") or {}
        return status if status.get("jobsSucceeded") == 1 else None

    status = await eventually(counted, 30, "one success in status")
    assert status["jobsFailed"] == 0
    assert status["activeJobs"] == 0
    reasons = {e.reason for e in await deployments.events("voice")}
    assert {"WorkerRegistered", "JobAssigned", "JobStarted", "JobEnded"} <= reasons
