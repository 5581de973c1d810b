"""What a real node enforces, as the operator's features: a job whose container is OOM-killed,
whose image cannot be pulled or whose pod no node can take fails at once with that reason; the
runner works under the restricted securityContext the operator sets by default."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support import cannot_start
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    dispatch,
    metric_value,
    ready_deployment,
    reasons_counted,
    starts_reported,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e
NODE_AGENTS = "tests.agents.node_agents"
START_TIMEOUT = 60  # the operator's default: a pod failure must end its job well before it


@pytest.fixture
def patient_operator(kube: KubeAccess, ns: str, local_kubelet: TestEnvironment) -> Iterator[OperatorProcess]:
    """An operator whose re-attach grace is long: a job that ends sooner did not wait for it."""
    op = OperatorProcess(
        kube.kubeconfig, [ns], local_kubelet.workdir / "logs" / f"operator-{ns}.log", reattach_grace=90
    )
    op.start()
    yield op
    op.stop()


def container(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["spec"]["template"]["spec"]["containers"][0]
    return found


async def no_pods(deployments: Deployments, name: str) -> None:
    async def gone() -> bool:
        return not await deployments.pods(name)

    await eventually(gone, 30, f"the pods of {name} removed")


async def warning_event(deployments: Deployments, name: str, reason: str, text: str) -> Any:
    async def find() -> Any:
        events = await deployments.events(name)
        return next((e for e in events if e.reason == reason and text in e.message), None)

    return await eventually(find, 30, f"{reason} Event of {name} saying {text!r}")


async def started_job(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    name: str,
    agent: str,
    **container: Any,
) -> str:
    """A deployment of the node agent ``agent`` (``container``: fields of its container), one job
    dispatched to a new room and reported started; the room."""
    body = await ready_deployment(
        deployments, operator, k8s, livekit, name, f"{NODE_AGENTS}:{agent}", container=container
    )
    room = f"{name}-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    await starts_reported(deployments, name, 1)
    return room


async def test_an_agent_over_its_memory_limit_fails_its_job_as_oomkilled_at_once(
    patient_operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    resources = {"requests": {"memory": "200Mi"}, "limits": {"memory": "200Mi"}}
    await started_job(
        patient_operator, deployments, k8s, livekit, lk, "hog", "hog_memory", resources=resources
    )
    t0 = time.monotonic()
    await status_equals(deployments, "hog", "jobsFailed", 1, timeout=60)
    elapsed = time.monotonic() - t0
    print(
        f"job started -> failed as OOMKilled: {elapsed:.2f}s (the agent hogs from 1 s; re-attach grace 90 s)"
    )
    assert elapsed < 30, elapsed
    event = await warning_event(deployments, "hog", "JobEnded", "OOMKilled")
    assert event.type == "Warning"
    assert "resources.limits.memory" in event.message
    metrics = await patient_operator.metrics()
    assert (
        metric_value(metrics, "agent_operator_job_pod_failures_total", deployment="hog", reason="OOMKilled")
        == 1
    )
    await no_pods(deployments, "hog")


@cannot_start.each_case
async def test_a_pod_that_cannot_start_fails_its_job_fast_saying_what_to_fix(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    case: str,
    agent: dict[str, Any],
    reasons: tuple[str, ...],
    fix: str,
) -> None:
    name = f"cannot-{case}"
    body = await ready_deployment(
        deployments, operator, k8s, livekit, name, f"{NODE_AGENTS}:report_sandbox", container=agent
    )
    room = f"{case}-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    await dispatch(lk, body["spec"]["agentName"], room)
    await status_equals(deployments, name, "jobsFailed", 1, timeout=START_TIMEOUT)
    elapsed = time.monotonic() - t0
    print(f"dispatch -> job failed ({case}): {elapsed:.2f}s (start timeout {START_TIMEOUT} s)")
    assert elapsed < START_TIMEOUT / 2, elapsed
    events = [
        e
        for e in await deployments.events(name)
        if e.reason in ("JobEnded", "JobFailed") and e.type == "Warning"
    ]
    assert events, [(e.reason, e.message) for e in await deployments.events(name)]
    assert any(r in events[0].message for r in reasons), events[0].message
    assert fix in events[0].message
    metrics = await operator.metrics()
    assert reasons_counted(metrics, "agent_operator_job_pod_failures_total", name, reasons) == 1
    await no_pods(deployments, name)


async def test_the_runner_works_under_the_restricted_defaults(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """No securityContext in the template: the operator's defaults (uid and gid 65532, read-only root,
    no capabilities) hold in the container, the agent can write /tmp only, and the job ends well."""
    body = await ready_deployment(
        deployments, operator, k8s, livekit, "sandbox", f"{NODE_AGENTS}:report_sandbox"
    )
    assert "securityContext" not in container(body)
    await dispatch(lk, body["spec"]["agentName"], f"sandbox-{uuid.uuid4().hex[:6]}")
    await status_equals(deployments, "sandbox", "jobsSucceeded", 1, timeout=90)

    def sandbox_line() -> str | None:
        return next((line for line in operator.log_text().splitlines() if "sandbox uid=" in line), None)

    async def logged() -> str | None:
        return sandbox_line()

    line = await eventually(logged, 30, "the agent's sandbox report in the operator's log")
    assert "uid=65532 " in line, line
    assert "gid=65532 " in line, line  # the operator's default runAsGroup (gid 0 without it)
    assert "root_write=EROFS" in line, line
    assert "app_write=EROFS" in line, line
    assert "tmp_write=ok" in line, line
    assert "capeff=0000000000000000" in line, line


# the probes of the README's example: the runner image has a shell; /tmp is the pod's emptyDir
READY_PROBE = {"exec": {"command": ["sh", "-c", "test -w /tmp"]}, "periodSeconds": 1}
LIVE_PROBE = {"exec": {"command": ["sh", "-c", "test -d /app"]}, "periodSeconds": 2}


async def test_probes_in_the_template_are_run_by_the_kubelet(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """A readiness and a liveness probe (the README's example) that hold make the job pod Ready
    while its call runs, and the call ends well."""
    probes = {"readinessProbe": READY_PROBE, "livenessProbe": LIVE_PROBE}
    body = await ready_deployment(
        deployments, operator, k8s, livekit, "probed", "beacon_forever", container=probes
    )
    room = f"probed-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")

    async def ready_pod() -> Any:
        for pod in await deployments.pods("probed"):
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") == "True":
                return pod
        return None

    pod = await eventually(ready_pod, 60, "the probed job pod Ready")
    assert pod.spec.containers[0].readiness_probe.period_seconds == 1
    assert pod.spec.containers[0].liveness_probe.period_seconds == 2
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "probed", "jobsSucceeded", 1, timeout=60)


async def test_a_failing_liveness_probe_fails_the_job_with_that_reason(
    patient_operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """The kubelet stops a container whose liveness probe fails; the runner shuts down on its
    SIGTERM as on a pod deletion, and exits 0 (restartPolicy Never: no restart). The job must
    fail, saying the probe failed, not succeed as a clean shutdown (it did, before)."""
    probe = {
        "exec": {"command": ["sh", "-c", "test ! -e /tmp/unhealthy"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    agent = "unhealthy_after_start"
    await started_job(patient_operator, deployments, k8s, livekit, lk, "unwell", agent, livenessProbe=probe)
    t0 = time.monotonic()
    status = await status_equals(deployments, "unwell", "jobsFailed", 1, timeout=60)
    print(f"job started -> failed for its liveness probe: {time.monotonic() - t0:.2f}s")
    assert status.get("jobsSucceeded", 0) == 0
    event = await warning_event(deployments, "unwell", "JobEnded", "liveness probe failed")
    assert "livenessProbe" in event.message, event.message
    metrics = await patient_operator.metrics()
    assert (
        metric_value(
            metrics,
            "agent_operator_job_pod_failures_total",
            deployment="unwell",
            reason="LivenessProbeFailed",
        )
        == 1
    )
    await no_pods(deployments, "unwell")


def test_the_nodes_pods_weigh_on_the_cpu_what_kubepods_weighs_on_a_real_node(
    local_kubelet: TestEnvironment,
) -> None:
    """The test node's cgroup (the kubelet's cgroupRoot) has the CPU weight of its CPUs, 1024
    each, as kubepods has on a real node; the environment's servers are processes of the root
    cgroup, 1024 each, so with one process's weight the pods would be starved when it is busy
    (the benchmarks compare pods with host processes)."""
    node = local_kubelet.node
    assert node is not None
    shares = Path("/sys/fs/cgroup/cpu") / node.cgroup_root.lstrip("/") / "cpu.shares"
    if not shares.exists():
        pytest.skip("no cgroup v1 cpu controller here")
    assert int(shares.read_text()) == 1024 * (os.cpu_count() or 1)
