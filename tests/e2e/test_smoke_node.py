"""Smoke tests proving the node is real: containerd, kubelet, kube-proxy, CoreDNS.

They run on the session's node (one node per network namespace: a second would fight over its
bridge, iptables and DNS address), with a small busybox image of their own imported into it.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from devenv import oci
from devenv.environment import TestEnvironment
from devenv.kubeclient import api_client, create_namespace, eventually
from devenv.node import RealNode

pytestmark = [pytest.mark.e2e, pytest.mark.smoke]

BUSYBOX = "localhost/agent-operator-test/busybox:smoke"
# Debian's static busybox wget crashes (it segfaults even on the host); nc speaks the HTTP needed
HTTP_GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3"
RESTRICTED: dict[str, Any] = {
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.fixture(scope="module")
def real_env(test_env: TestEnvironment) -> TestEnvironment:
    """The session's environment, its node holding the busybox image."""
    if test_env.node is None:
        pytest.skip("needs this run's own node (not available against an external cluster)")
    _import_busybox(test_env)
    return test_env


def _import_busybox(env: TestEnvironment) -> None:
    assert env.node is not None
    archive = env.workdir / "busybox.tar"
    oci.busybox_image(archive, BUSYBOX)
    env.node.import_image(archive)


@pytest.fixture
def node(real_env: TestEnvironment) -> RealNode:
    assert real_env.node is not None
    return real_env.node


@pytest.fixture
async def api(real_env: TestEnvironment) -> AsyncIterator[client.ApiClient]:
    assert real_env.kube is not None
    k8s = await api_client(real_env.kube.kubeconfig)
    async with k8s:
        yield k8s


@pytest.fixture
async def ns(api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = await create_namespace(core, f"node-{uuid.uuid4().hex[:8]}")
    yield name
    await core.delete_namespace(name, grace_period_seconds=0)


def pod(name: str, script: str, *, image: str = BUSYBOX, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **container,
    }
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [spec],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


async def run_pod(core: client.CoreV1Api, ns: str, body: dict[str, Any]) -> None:
    await core.create_namespaced_pod(ns, body)


async def wait_phase(
    core: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 90
) -> Any:
    async def probe() -> Any:
        p = await core.read_namespaced_pod(name, ns)
        return p if p.status.phase in phases else None

    return await eventually(probe, timeout, f"pod {name} in {sorted(phases)}", interval=0.3)


def _cmdline(pid: int) -> list[str]:
    """A process's argv, or [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except FileNotFoundError:
        return []


def terminated(p: Any) -> Any:
    state = p.status.container_statuses[0].state
    assert state.terminated is not None, state
    return state.terminated


async def test_node_is_ready(api: client.ApiClient, node: RealNode) -> None:
    n = await client.CoreV1Api(api).read_node(node.name)
    ready = {c.type: c.status for c in n.status.conditions}["Ready"]
    assert ready == "True"
    assert n.status.node_info.kubelet_version == "v1.36.3"
    assert n.status.node_info.container_runtime_version.startswith("containerd://")
    assert {a.address for a in n.status.addresses if a.type == "InternalIP"} == {node.node_ip}


async def test_restricted_pod_runs_as_65532_with_read_only_root(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    script = (
        "echo uid=$(id -u);"
        "if touch /rootfs-write; then echo root: writable; else echo root: refused; fi;"
        "echo ok > /tmp/ok && echo tmp: $(cat /tmp/ok);"
        "grep CapEff /proc/self/status"
    )
    await run_pod(core, ns, pod("restricted", script))
    await wait_phase(core, ns, "restricted", {"Succeeded"})
    logs = await core.read_namespaced_pod_log("restricted", ns)
    assert "uid=65532" in logs
    assert "root: refused" in logs
    assert "root: writable" not in logs
    assert "tmp: ok" in logs
    assert "CapEff:\t0000000000000000" in logs


async def test_write_outside_tmp_is_erofs(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    await run_pod(core, ns, pod("erofs", "touch /etc-write; echo exit=$?"))
    await wait_phase(core, ns, "erofs", {"Succeeded"})
    logs = await core.read_namespaced_pod_log("erofs", ns)
    assert "Read-only file system" in logs
    assert "exit=1" in logs


async def test_memory_limit_oom_kills(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    limits = {"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}}
    # tail keeps the last lines of a file with no newline: all of /dev/zero, in memory
    await run_pod(core, ns, pod("oom", "tail /dev/zero", resources=limits))
    p = await wait_phase(core, ns, "oom", {"Failed", "Succeeded"})
    assert p.status.phase == "Failed"
    term = terminated(p)
    assert (term.exit_code, term.reason) == (137, "OOMKilled")


async def test_missing_image_fails_to_pull(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    await run_pod(core, ns, pod("absent", "true", image="localhost/agent-operator-test/absent:none"))

    async def pull_failed() -> str | None:
        p = await core.read_namespaced_pod("absent", ns)
        waiting = p.status.container_statuses[0].state.waiting if p.status.container_statuses else None
        return waiting.reason if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff") else None

    assert await eventually(pull_failed, 60, "ErrImagePull/ImagePullBackOff") in (
        "ErrImagePull",
        "ImagePullBackOff",
    )


async def test_dns_and_service_cluster_ip(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    web = pod(
        "web",
        "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www",
    )
    await run_pod(core, ns, web)
    svc = await core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    await wait_phase(core, ns, "web", {"Running"})
    script = (
        "nslookup kubernetes.default.svc.cluster.local;"
        f"for i in 1 2 3 4 5 6 7 8; do {HTTP_GET} {svc.spec.cluster_ip} 80 > /tmp/by-ip && break; sleep 1;"
        " done; echo by-ip: $(tail -1 /tmp/by-ip);"
        f"{HTTP_GET} web.{ns}.svc.cluster.local 80 > /tmp/by-name; echo by-name: $(tail -1 /tmp/by-name)"
    )
    await run_pod(core, ns, pod("client", script))
    await wait_phase(core, ns, "client", {"Succeeded", "Failed"})
    logs = await core.read_namespaced_pod_log("client", ns)
    assert "10.96.0.1" in logs, logs  # the kubernetes Service's ClusterIP, answered by CoreDNS
    assert "by-ip: hello-from-web" in logs, logs  # by ClusterIP, through kube-proxy
    assert "by-name: hello-from-web" in logs, logs  # by Service name through CoreDNS


async def test_sigkill_through_containerd_exits_137(api: client.ApiClient, ns: str, node: RealNode) -> None:
    core = client.CoreV1Api(api)
    await run_pod(core, ns, pod("victim", "sleep 3600"))
    p = await wait_phase(core, ns, "victim", {"Running"})
    pid = await asyncio.to_thread(node.container_pid, p)
    assert (await asyncio.to_thread(_cmdline, pid))[:2] == ["sleep", "3600"]
    await asyncio.to_thread(node.signal_container, p, signal.SIGKILL)
    p = await wait_phase(core, ns, "victim", {"Failed"}, timeout=30)
    assert terminated(p).exit_code == 137
    assert await asyncio.to_thread(_cmdline, pid) == []


async def test_readiness_probe_is_honoured(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    probe = {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}
    await run_pod(core, ns, pod("probed", "sleep 4; touch /tmp/ready; sleep 3600", readinessProbe=probe))

    def ready(p: Any) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])

    seen_unready_running = False

    async def became_ready() -> bool:
        nonlocal seen_unready_running
        p = await core.read_namespaced_pod("probed", ns)
        if p.status.phase == "Running" and not ready(p):
            seen_unready_running = True
        return ready(p)

    await eventually(became_ready, 60, "pod Ready after its probe passes", interval=0.3)
    assert seen_unready_running, "the pod was Ready before its readiness probe could pass"


async def test_pod_reaches_the_api_with_its_service_account_token(api: client.ApiClient, ns: str) -> None:
    """The kubelet mounts a projected token (TokenRequest under the Node authorizer) and the
    ``kubernetes`` Service's ClusterIP leads to the API server's node-IP address."""
    core = client.CoreV1Api(api)
    body = pod(
        "sa",
        "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token: present;"
        # plain HTTP to the TLS port: only the API server answers that with this complaint
        f"{HTTP_GET} kubernetes.default.svc.cluster.local 443",
    )
    body["spec"]["automountServiceAccountToken"] = True
    await run_pod(core, ns, body)
    await wait_phase(core, ns, "sa", {"Succeeded", "Failed"})
    logs = await core.read_namespaced_pod_log("sa", ns)
    assert "token: present" in logs, logs
    assert "Client sent an HTTP request to an HTTPS server" in logs, logs


async def test_exec_through_the_api(api: client.ApiClient, ns: str) -> None:
    """API server -> kubelet (InternalIP, its serving cert) -> containerd's stream server."""
    core = client.CoreV1Api(api)
    await run_pod(core, ns, pod("exec", "echo inside > /tmp/mark; sleep 3600"))
    await wait_phase(core, ns, "exec", {"Running"})
    assert api.configuration is not None
    async with WsApiClient(configuration=api.configuration) as ws:
        out = await client.CoreV1Api(ws).connect_get_namespaced_pod_exec(
            "exec", ns, command=["cat", "/tmp/mark"], stdout=True, stderr=True, stdin=False, tty=False
        )
    assert "inside" in out


async def test_pod_reports_its_exit_code_and_address(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    await run_pod(core, ns, pod("exit3", "echo hi; exit 3"))
    p = await wait_phase(core, ns, "exit3", {"Succeeded", "Failed"})
    assert p.status.phase == "Failed"
    assert terminated(p).exit_code == 3
    assert p.spec.node_name
    assert p.status.pod_ip
    await run_pod(core, ns, pod("ok", "exit 0"))
    p = await wait_phase(core, ns, "ok", {"Succeeded", "Failed"})
    assert p.status.phase == "Succeeded"
    assert terminated(p).exit_code == 0


async def _deleted(core: client.CoreV1Api, ns: str, name: str) -> None:
    async def gone() -> bool:
        try:
            await core.read_namespaced_pod(name, ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone, 60, f"pod {name} deleted")


async def test_graceful_delete_stops_the_container(api: client.ApiClient, ns: str, node: RealNode) -> None:
    core = client.CoreV1Api(api)
    # exec: SIGTERM reaches `sleep`, which as a container's pid 1 has no handler and ignores it,
    # so the kubelet's SIGKILL after the grace period ends it
    body = pod("sleeper", "exec sleep 1000")
    body["spec"]["terminationGracePeriodSeconds"] = 2
    await run_pod(core, ns, body)
    p = await wait_phase(core, ns, "sleeper", {"Running"})
    pid = await asyncio.to_thread(node.container_pid, p)
    assert (await asyncio.to_thread(_cmdline, pid))[:1] == ["sleep"]
    t0 = time.monotonic()
    await core.delete_namespaced_pod("sleeper", ns)
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(_cmdline, pid), "inside its grace period the container still runs"
    await _deleted(core, ns, "sleeper")
    assert time.monotonic() - t0 >= 2.0, "the grace period was honoured"
    assert await asyncio.to_thread(_cmdline, pid) == []


async def test_projected_service_account_token(api: client.ApiClient, ns: str) -> None:
    """The kubelet asks TokenRequest for a pod-bound token; TokenReview accepts it for its
    audience only."""
    core = client.CoreV1Api(api)
    audience = "agentoperator.dev/smoke"
    body = pod("tokened", "cat /var/run/secrets/test/token; echo; sleep 3600")
    mounts = body["spec"]["containers"][0]["volumeMounts"]
    mounts.append({"name": "tok", "mountPath": "/var/run/secrets/test"})
    body["spec"]["volumes"].append(
        {
            "name": "tok",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": audience, "expirationSeconds": 600, "path": "token"}}
                ]
            },
        }
    )
    await run_pod(core, ns, body)
    running = await wait_phase(core, ns, "tokened", {"Running"})

    async def logged() -> str | None:
        text: str = await core.read_namespaced_pod_log("tokened", ns)
        return text.strip() or None

    token = await eventually(logged, 30, "the token in the pod's log")
    auth = client.AuthenticationV1Api(api)
    review = await auth.create_token_review({"spec": {"token": token, "audiences": [audience]}})
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{ns}:default"
    assert review.status.user.extra["authentication.kubernetes.io/pod-name"] == ["tokened"]
    assert review.status.user.extra["authentication.kubernetes.io/pod-uid"] == [running.metadata.uid]
    wrong = await auth.create_token_review({"spec": {"token": token, "audiences": ["someone-else"]}})
    assert not wrong.status.authenticated
