"""The warm pool end to end: idle runner pods attached and waiting; jobs taken without a pod start."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    AGENTS,
    GROUP,
    PLURAL,
    VERSION,
    Deployments,
    OperatorProcess,
    agent_deployment,
    answered_call,
    create_credentials,
    dispatch,
    idle_pods,
    metric_value,
    new_idle_pods,
    wait_participant,
)

pytestmark = pytest.mark.e2e


async def wait_pool(deployments: Deployments, name: str, ready: int, timeout: float = 90) -> dict[str, Any]:
    """Until status.idlePods (attached, idle runners) reaches ``ready``."""

    async def check() -> dict[str, Any] | None:
        status = (await deployments.get(name)).get("status") or {}
        return status if status.get("idlePods") == ready else None

    return await eventually(check, timeout, f"{name} with {ready} idle attached pods")


async def pooled(
    deployments: Deployments,
    operator: OperatorProcess,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    name: str,
    size: int,
    **spec: Any,
) -> dict[str, Any]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = await deployments.create(
        agent_deployment(
            name, livekit, f"{AGENTS}:beacon_forever", warmPool={"size": size, **spec.pop("pool", {})}, **spec
        )
    )
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True")
    await wait_pool(deployments, name, size)
    return body


async def test_assignment_goes_to_an_idle_pod_and_the_pool_refills(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await pooled(deployments, operator, k8s, livekit, "warm", 2)
    before = {p.metadata.uid for p in await idle_pods(deployments, "warm")}
    assert len(before) == 2
    room = f"room-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    print(f"create_dispatch -> agent joined (warm path): {time.monotonic() - t0:.2f}s")

    async def busy_pod() -> Any:
        pods = await deployments.pods("warm")
        return next((p for p in pods if p.metadata.labels.get("agentoperator.dev/state") == "busy"), None)

    busy = await eventually(busy_pod, 30, "the pool pod labelled busy")
    assert busy.metadata.uid in before, "the job ran on a pod that was waiting in the pool"
    assert busy.metadata.annotations["agentoperator.dev/room"] == room
    job_id = busy.metadata.labels["agentoperator.dev/job-id"]
    assert job_id

    # refilled: two idle pods again, one of them new; three pods in all. Waited for by the
    # pods: the status may still say 2 from before the take (the refill waits for the call to
    # start, pool_plan.refill_waits)
    after = await new_idle_pods(deployments, "warm", before, timeout=90)
    assert len(after - before) == 1
    assert len(after) == 2
    await wait_pool(deployments, "warm", 2)
    assert 'path="warm"' in await operator.metrics()

    # the busy pod is never reused: when its job ends it goes away
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    async def busy_gone() -> bool:
        return busy.metadata.uid not in {p.metadata.uid for p in await deployments.pods("warm")}

    await eventually(busy_gone, 60, "the used pod removed")


async def test_empty_pool_takes_the_cold_path(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await pooled(deployments, operator, k8s, livekit, "tiny", 1, maxConcurrentJobs=3)
    rooms = [f"room-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for room in rooms:
        await dispatch(lk, body["spec"]["agentName"], room)
    for room in rooms:
        await wait_participant(lk, room, "agent-")
    page = await operator.metrics()
    placed = {
        path: metric_value(page, "agent_operator_job_placements_total", deployment="tiny", path=path)
        for path in ("warm", "cold")
    }
    assert placed == {"warm": 1, "cold": 1}, "one call took the idle pod, the other a new pod"


async def test_idle_pods_are_recycled_by_age(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
) -> None:
    await pooled(deployments, operator, k8s, livekit, "aging", 1, pool={"maxIdleAge": "4s"})
    first = {p.metadata.uid for p in await idle_pods(deployments, "aging")}

    async def replaced() -> bool:
        now = {p.metadata.uid for p in await idle_pods(deployments, "aging")}
        return bool(now) and not (now & first)

    await eventually(replaced, 60, "idle pod replaced after maxIdleAge")
    await wait_pool(deployments, "aging", 1)


async def test_template_change_replaces_idle_pods_but_not_busy_ones(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await pooled(deployments, operator, k8s, livekit, "tmpl", 2)
    room, agent = await answered_call(lk, body["spec"]["agentName"])
    await wait_pool(deployments, "tmpl", 2)

    async def labelled_busy() -> Any:  # once the call joined (placement: at most 1.5 s on)
        pods = await deployments.pods("tmpl")
        return next((p for p in pods if p.metadata.labels["agentoperator.dev/state"] == "busy"), None)

    busy = await eventually(labelled_busy, 30, "the call's pool pod labelled busy")
    old_hash = busy.metadata.labels["agentoperator.dev/template-hash"]

    template = body["spec"]["template"]
    template["spec"]["containers"][0]["env"].append({"name": "AGENT_VERSION", "value": "2"})
    await deployments.patch("tmpl", {"spec": {"template": template}})

    async def all_idle_current() -> bool:
        idle = await idle_pods(deployments, "tmpl")
        hashes = {p.metadata.labels["agentoperator.dev/template-hash"] for p in idle}
        return len(idle) == 2 and old_hash not in hashes

    await eventually(all_idle_current, 90, "idle pods rebuilt from the new template")
    await wait_pool(deployments, "tmpl", 2)
    still = await wait_participant(lk, room, "agent-", timeout=10)
    assert still.sid == agent.sid, "the busy pod finished its job untouched"
    uids = {p.metadata.uid for p in await deployments.pods("tmpl")}
    assert busy.metadata.uid in uids


async def test_pool_survives_an_operator_restart(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
) -> None:
    await pooled(deployments, operator, k8s, livekit, "sturdy", 2)
    before = {p.metadata.uid for p in await idle_pods(deployments, "sturdy")}
    await restarted_after_a_kill(operator, deployments, "sturdy", 2)
    await asyncio.sleep(3)
    after = {p.metadata.uid for p in await idle_pods(deployments, "sturdy")}
    assert after == before, "the same idle pods re-attached; none was replaced"


async def restarted_after_a_kill(
    operator: OperatorProcess, deployments: Deployments, name: str, idle: int
) -> None:
    """The operator SIGKILLed and started again 2 s later, until it is ready, deployment
    ``name`` is Ready and ``idle`` pool pods are idle again."""
    operator.kill()
    await asyncio.sleep(2)
    operator.start()
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True")
    await wait_pool(deployments, name, idle)


async def kubectl_scale(custom: client.CustomObjectsApi, namespace: str, name: str, replicas: int) -> None:
    """What `kubectl scale agentdeployment/<name> --replicas=<replicas>` sends."""
    await custom.patch_namespaced_custom_object_scale(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json",
    )


async def test_scale_subresource_resizes_the_pool(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
) -> None:
    await pooled(deployments, operator, k8s, livekit, "scaled", 1)
    custom = client.CustomObjectsApi(k8s)
    await kubectl_scale(custom, deployments.namespace, "scaled", 3)
    await wait_pool(deployments, "scaled", 3)
    scale = await custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, deployments.namespace, PLURAL, "scaled"
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3
    await kubectl_scale(custom, deployments.namespace, "scaled", 0)
    await wait_pool(deployments, "scaled", 0)

    async def none_left() -> bool:
        return not await idle_pods(deployments, "scaled")

    await eventually(none_left, 60, "idle pods removed after scaling to 0")


async def test_a_pool_older_than_the_start_timeout_survives_an_operator_restart(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
) -> None:
    """Adopted idle pods get a fresh attach window from their adoption, not from their
    creation: pods older than ``startTimeout`` are kept, and none is created."""
    start_timeout = 12.0
    await pooled(
        deployments, operator, k8s, livekit, "aged", 3, heartbeat={"startTimeout": f"{start_timeout:.0f}s"}
    )
    before = {p.metadata.uid for p in await idle_pods(deployments, "aged")}
    assert len(before) == 3
    await asyncio.sleep(start_timeout + 3)  # every pool pod is now older than the start timeout
    await restarted_after_a_kill(operator, deployments, "aged", 3)
    await asyncio.sleep(3)  # a replacement would have been made by now
    after = {p.metadata.uid for p in await idle_pods(deployments, "aged")}
    everything = {p.metadata.uid for p in await deployments.pods("aged")}
    print(f"kept {len(after & before)} of {len(before)} idle pods; {len(everything - before)} created")
    assert after == before, "the same idle pods re-attached; none was replaced"
    assert everything == before, "no pod was created or deleted"


async def test_a_burst_of_dispatches_never_runs_more_pods_than_max_concurrent_jobs(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """100 dispatches at once at maxConcurrentJobs 5 and a pool of 2, calls ending while the
    rest wait: idle + busy pods (the live ones, not being deleted) stay at or below 5 at
    every sample of the pod list."""
    body = await pooled(deployments, operator, k8s, livekit, "burst", 2, maxConcurrentJobs=5)
    core = client.CoreV1Api(k8s)
    peak, samples = 0, 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak, samples
        while not stop.is_set():
            pods = await core.list_namespaced_pod(
                deployments.namespace, label_selector="agentoperator.dev/deployment=burst"
            )
            live = [p for p in pods.items if not p.metadata.deletion_timestamp]
            peak, samples = max(peak, len(live)), samples + 1
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    rooms = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(100)]
    ended: set[str] = set()
    try:
        await asyncio.gather(*(dispatch(lk, body["spec"]["agentName"], room) for room in rooms))

        async def full() -> bool:
            status = (await deployments.get("burst")).get("status") or {}
            return status.get("activeJobs") == 5

        await eventually(full, 90, "five jobs running")
        # calls end while the rest wait: each freed slot is refilled and offered again
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = [
                p.metadata.annotations.get("agentoperator.dev/room", "")
                for p in await deployments.pods("burst")
                if p.metadata.labels.get("agentoperator.dev/state") == "busy"
                and not p.metadata.deletion_timestamp
            ]
            for room in [r for r in busy if r and r not in ended][:2]:
                ended.add(room)
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            await asyncio.sleep(1.5)
    finally:
        stop.set()
        await sampler
        await asyncio.gather(
            *(lk.room.delete_room(api.DeleteRoomRequest(room=room)) for room in rooms), return_exceptions=True
        )
    print(f"{len(ended)} calls ended during the burst")
    print(f"peak live pods {peak} over {samples} samples (maxConcurrentJobs 5)")
    assert samples > 20
    assert peak <= 5, f"{peak} live pods at once, more than maxConcurrentJobs"
