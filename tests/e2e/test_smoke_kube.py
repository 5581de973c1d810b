"""Smoke tests proving the Kubernetes half of the test environment is real."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devenv import binaries
from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.smoke]


async def test_apiserver_answers_version(k8s: client.ApiClient, test_env: TestEnvironment) -> None:
    info = await client.VersionApi(k8s).get_code()
    assert info.major == "1"
    if test_env.local_kube:
        assert info.git_version == binaries.K8S_VERSION


async def test_crd_created_and_custom_object_listed(k8s: client.ApiClient, namespace: str) -> None:
    group = f"smoke{uuid.uuid4().hex[:6]}.agentoperator.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    ext = client.ApiextensionsV1Api(k8s)
    await ext.create_custom_resource_definition(crd)
    try:

        async def established() -> bool:
            got = await ext.read_custom_resource_definition(f"widgets.{group}")
            return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

        await eventually(established, 30, "CRD Established")
        custom = client.CustomObjectsApi(k8s)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }

        async def create() -> bool:  # discovery may lag Established by a moment
            await custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)
            return True

        await eventually(create, 30, "custom object created")
        listed = await custom.list_namespaced_custom_object(group, "v1", namespace, "widgets")
        assert [(o["metadata"]["name"], o["spec"]["size"]) for o in listed["items"]] == [("w1", 3)]
    finally:
        await ext.delete_custom_resource_definition(f"widgets.{group}")


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": command}],
            **spec,
        },
    }


async def _wait_phase(core: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float) -> Any:
    async def phase() -> Any:
        pod = await core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return await eventually(phase, timeout, f"pod {name} in {phases}")


async def test_pod_runs_and_reports_exit_code(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    await core.create_namespaced_pod(namespace, _pod("exit3", ["sh", "-c", "echo hi; exit 3"]))
    pod = await _wait_phase(core, namespace, "exit3", {"Succeeded", "Failed"}, 120)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert pod.spec.node_name
    assert pod.status.pod_ip


async def test_pod_succeeds_with_zero_exit(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    await core.create_namespaced_pod(namespace, _pod("ok", ["sh", "-c", "exit 0"]))
    pod = await _wait_phase(core, namespace, "ok", {"Succeeded", "Failed"}, 120)
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def _pid_of(pod: Any) -> int:
    container_id: str = pod.status.container_statuses[0].container_id
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by the kubelet counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


async def test_graceful_delete_stops_process(
    k8s: client.ApiClient, namespace: str, process_kubelet: TestEnvironment
) -> None:
    core = client.CoreV1Api(k8s)
    # exec so that SIGTERM reaches `sleep`, which (as pid 1 would not) dies on it
    await core.create_namespaced_pod(namespace, _pod("sleeper", ["sleep", "1000"]))
    pod = await _wait_phase(core, namespace, "sleeper", {"Running"}, 120)
    pid = _pid_of(pod)
    assert _process_exists(pid)
    t0 = time.monotonic()
    await core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=2)

    async def gone() -> bool:
        try:
            await core.read_namespaced_pod("sleeper", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone, 30, "pod deleted")
    elapsed = time.monotonic() - t0
    assert not _process_exists(pid)
    print(f"graceful delete of a running pod took {elapsed:.2f}s")


async def test_grace_period_ends_in_sigkill(
    k8s: client.ApiClient, namespace: str, process_kubelet: TestEnvironment
) -> None:
    """A process that ignores SIGTERM is killed once the grace period is over."""
    core = client.CoreV1Api(k8s)
    await core.create_namespaced_pod(
        namespace, _pod("stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"])
    )
    pod = await _wait_phase(core, namespace, "stubborn", {"Running"}, 120)
    pid = _pid_of(pod)
    t0 = time.monotonic()
    await core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=2)
    await asyncio.sleep(1.0)
    assert _process_exists(pid), "SIGTERM was ignored, so the process must still run inside its grace"

    async def dead() -> bool:
        return not _process_exists(pid)

    await eventually(dead, 30, "process killed after grace")
    assert time.monotonic() - t0 >= 2.0


async def test_projected_service_account_token(
    k8s: client.ApiClient, namespace: str, process_kubelet: TestEnvironment, kube: KubeAccess
) -> None:
    """The kubelet asks TokenRequest for a pod-bound token; TokenReview accepts it for the audience."""
    core = client.CoreV1Api(k8s)
    audience = "agentoperator.dev/smoke"
    pod = _pod("tokened", ["sh", "-c", 'test -s "$TOKEN_FILE" && sleep 1000'])
    pod["spec"]["containers"][0]["env"] = [{"name": "TOKEN_FILE", "value": "/var/run/secrets/test/token"}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tok", "mountPath": "/var/run/secrets/test"}]
    pod["spec"]["automountServiceAccountToken"] = False
    pod["spec"]["volumes"] = [
        {
            "name": "tok",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": audience, "expirationSeconds": 600, "path": "token"}}
                ]
            },
        }
    ]
    await core.create_namespaced_pod(namespace, pod)
    running = await _wait_phase(core, namespace, "tokened", {"Running", "Failed", "Succeeded"}, 120)
    assert running.status.phase == "Running"
    assert process_kubelet.kubelet is not None
    token_files = list(
        (process_kubelet.kubelet.state_dir / "pods").glob(f"{namespace}_tokened_*/volumes/tok/token")
    )
    assert len(token_files) == 1
    token = token_files[0].read_text()
    review = await client.AuthenticationV1Api(k8s).create_token_review(
        {"spec": {"token": token, "audiences": [audience]}}
    )
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"
    assert review.status.user.extra["authentication.kubernetes.io/pod-name"] == ["tokened"]
    assert review.status.user.extra["authentication.kubernetes.io/pod-uid"] == [running.metadata.uid]
    wrong = await client.AuthenticationV1Api(k8s).create_token_review(
        {"spec": {"token": token, "audiences": ["someone-else"]}}
    )
    assert not wrong.status.authenticated
    await core.delete_namespaced_pod("tokened", namespace, grace_period_seconds=0)
