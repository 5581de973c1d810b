"""The operator end to end: a real ``agent-operator run`` process, the real API server
(PodSecurity ``restricted`` enforced on the namespace), the process kubelet running real
runners, and the real livekit-server dispatching jobs."""

from __future__ import annotations

import asyncio
import os
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
    return await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
    )


async def _ready_deployment(
    deployments: Deployments,
    operator: OperatorProcess,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    name: str,
    entrypoint: str,
    **spec: Any,
) -> dict[str, Any]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit) if not spec.pop(
        "_no_secret", False
    ) else None
    body = await deployments.create(agent_deployment(name, livekit, f"{AGENTS}:{entrypoint}", **spec))
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True", timeout=60)
    return body


async def test_dispatch_runs_one_pod_per_job_and_cleans_up(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
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


async def _job_pod(deployments: Deployments, name: str, timeout: float = 60) -> Any:
    async def one() -> Any:
        pods = await deployments.pods(name)
        return pods[0] if len(pods) == 1 else None

    return await eventually(one, timeout, f"one pod of {name}")


async def _pid(deployments: Deployments, pod: Any) -> int:
    async def read() -> int | None:
        got = await deployments.core.read_namespaced_pod(pod.metadata.name, deployments.namespace)
        statuses = got.status.container_statuses or []
        if statuses and statuses[0].container_id:
            return int(statuses[0].container_id.removeprefix("process://"))
        return None

    return await eventually(read, 30, "runner pid")


async def _status(
    deployments: Deployments, name: str, key: str, value: int, timeout: float = 60
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = (await deployments.get(name)).get("status") or {}
        return status if status.get(key) == value else None

    return await eventually(check, timeout, f"{name} status {key}={value}")


async def test_deployments_get_only_their_own_agent_names(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    a = await deployments.create(agent_deployment("alpha", livekit, f"{AGENTS}:beacon_forever"))
    b = await deployments.create(agent_deployment("beta", livekit, f"{AGENTS}:beacon_forever"))
    await operator.wait_ready()
    for name in ("alpha", "beta"):
        await deployments.wait_condition(name, "Ready", "True")
    room_a, room_b = f"ra-{uuid.uuid4().hex[:6]}", f"rb-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, a["spec"]["agentName"], room_a)
    await _dispatch(lk, b["spec"]["agentName"], room_b)
    await wait_participant(lk, room_a, "agent-")
    await wait_participant(lk, room_b, "agent-")
    pod_a, pod_b = await _job_pod(deployments, "alpha"), await _job_pod(deployments, "beta")
    assert pod_a.metadata.annotations["agentoperator.dev/room"] == room_a
    assert pod_b.metadata.annotations["agentoperator.dev/room"] == room_b


async def test_capacity_limits_what_the_worker_accepts(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await _ready_deployment(
        deployments, operator, k8s, livekit, "solo", "beacon_forever", maxConcurrentJobs=1
    )
    agent_name = body["spec"]["agentName"]
    first, second = f"r1-{uuid.uuid4().hex[:6]}", f"r2-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, agent_name, first)
    await wait_participant(lk, first, "agent-")
    await _dispatch(lk, agent_name, second)
    await asyncio.sleep(8)  # the server asks, is refused, and has no other worker
    participants = await lk.room.list_participants(api.ListParticipantsRequest(room=second))
    assert not [p for p in participants.participants if p.identity.startswith("agent-")]
    assert len(await deployments.pods("solo")) == 1
    metrics = await operator.metrics()
    assert 'answer="no"' in metrics
    assert 'reason="at_capacity"' in metrics


async def test_stopped_runner_pod_is_deleted_and_reported(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    heartbeat = {"pingInterval": "500ms", "pingTimeout": "4s"}
    body = await _ready_deployment(
        deployments, operator, k8s, livekit, "hung", "beacon_forever", heartbeat=heartbeat
    )
    room = f"room-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    pod = await _job_pod(deployments, "hung")
    pid = await _pid(deployments, pod)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)

    async def gone() -> bool:
        return not await deployments.pods("hung")

    await eventually(gone, 60, "unresponsive runner's pod deleted")
    elapsed = time.monotonic() - t0
    print(f"SIGSTOP -> pod deleted: {elapsed:.2f}s (ping timeout 4s, interval 0.5s)")
    assert elapsed <= 4 + 0.5 + 10, elapsed
    await _status(deployments, "hung", "jobsFailed", 1)
    events = await deployments.events("hung")
    unresponsive = [e for e in events if e.reason == "RunnerUnresponsive"]
    assert unresponsive
    assert unresponsive[0].type == "Warning"
    assert "no pong" in unresponsive[0].message
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_crashing_entrypoint_fails_the_job_and_operator_stays_healthy(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await _ready_deployment(deployments, operator, k8s, livekit, "crashy", "fail_after_join")
    await _dispatch(lk, body["spec"]["agentName"], f"room-{uuid.uuid4().hex[:6]}")
    await _status(deployments, "crashy", "jobsFailed", 1)

    async def gone() -> bool:
        return not await deployments.pods("crashy")

    await eventually(gone, 60, "crashed runner's pod removed")
    events = [e for e in await deployments.events("crashy") if e.reason == "JobEnded"]
    assert any("broke on purpose" in e.message for e in events)
    assert operator.alive()
    await deployments.wait_condition("crashy", "Ready", "True")


async def test_operator_killed_mid_job_readopts_the_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await _ready_deployment(deployments, operator, k8s, livekit, "steady", "beacon_forever")
    room = f"room-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, body["spec"]["agentName"], room)
    agent = await wait_participant(lk, room, "agent-")
    pod = await _job_pod(deployments, "steady")

    operator.kill()
    await asyncio.sleep(3)
    # the call goes on without the operator
    still = await wait_participant(lk, room, "agent-", timeout=10)
    assert still.sid == agent.sid

    operator.start()
    await operator.wait_ready()
    await deployments.wait_condition("steady", "Ready", "True")

    async def adopted() -> bool:
        return any(e.reason == "JobAdopted" for e in await deployments.events("steady"))

    await eventually(adopted, 60, "JobAdopted event")
    await asyncio.sleep(3)
    pods = await deployments.pods("steady")
    assert [p.metadata.uid for p in pods] == [pod.metadata.uid], "no second pod for the same job"
    again = await wait_participant(lk, room, "agent-", timeout=10)
    assert again.sid == agent.sid, "the agent never left the call"
    assert (await deployments.get("steady"))["status"]["activeJobs"] == 1


async def test_livekit_restart_reregisters(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    test_env: TestEnvironment,
) -> None:
    if test_env.livekit_server is None:
        pytest.skip("needs the local livekit-server")
    await _ready_deployment(deployments, operator, k8s, livekit, "resilient", "beacon_forever")
    before = (await deployments.get("resilient"))["status"]["workerId"]
    test_env.livekit_server.restart(down_for=2)

    async def reregistered() -> bool:
        status = (await deployments.get("resilient")).get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("status") == "True" and status.get("workerId") not in ("", before)

    await eventually(reregistered, 90, "worker registered again after livekit-server restart")
    assert "agent_operator_worker_reconnects_total" in await operator.metrics()


async def test_bad_input_is_refused_or_reported_and_others_keep_working(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    bad_entrypoint = agent_deployment("bad1", livekit, "not an entrypoint")
    with pytest.raises(ApiException) as refused:
        await deployments.create(bad_entrypoint)
    assert refused.value.status == 422
    assert "spec.entrypoint" in refused.value.body

    negative = agent_deployment("bad2", livekit, f"{AGENTS}:beacon_forever", maxConcurrentJobs=-1)
    with pytest.raises(ApiException) as refused:
        await deployments.create(negative)
    assert "maxConcurrentJobs" in refused.value.body

    pool = agent_deployment(
        "bad3", livekit, f"{AGENTS}:beacon_forever", maxConcurrentJobs=2, warmPool={"size": 3}
    )
    with pytest.raises(ApiException) as refused:
        await deployments.create(pool)
    assert "warmPool.size must not exceed maxConcurrentJobs" in refused.value.body

    body = await _ready_deployment(deployments, operator, k8s, livekit, "good", "beacon_forever")
    await deployments.create(
        agent_deployment("nosecret", livekit, f"{AGENTS}:beacon_forever", secret="missing")
    )
    cond = await deployments.wait_condition("nosecret", "Ready", "False")
    assert cond["reason"] == "SecretNotFound"
    assert "missing" in cond["message"]

    # the good one still serves
    room = f"room-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")

    # fixing the secret makes the broken one ready, without touching the operator
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit, name="missing")
    await deployments.wait_condition("nosecret", "Ready", "True", timeout=60)
    assert operator.alive()


async def test_no_token_or_secret_leaks(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await _ready_deployment(deployments, operator, k8s, livekit, "quiet", "beacon_forever")
    room = f"room-{uuid.uuid4().hex[:6]}"
    await _dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    pod = await _job_pod(deployments, "quiet")
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await _status(deployments, "quiet", "jobsSucceeded", 1)
    pod_text = repr(client.ApiClient().sanitize_for_serialization(pod))
    events = " ".join(f"{e.reason} {e.message}" for e in await deployments.events("quiet"))
    log_text = operator.log_text()
    assert log_text.count("\n") > 20, "the operator logged its work"
    assert livekit.api_secret not in pod_text + events + log_text
    # any JWT (a room token or the worker's token) would start with this header
    for text in (pod_text, events, log_text):
        assert "eyJhbGciOi" not in text
