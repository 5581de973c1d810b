"""The chart's RBAC is enough and no more: the operator runs under the chart's ServiceAccount
(a real token from TokenRequest) against the real API server and completes a job, and the
same identity is refused a Secret it was not granted."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api

from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    status_equals,
    wait_participant,
)
from tests.testenv import binaries
from tests.testenv.environment import REPO_ROOT, TestEnvironment
from tests.testenv.kube import KubeAccess, write_token_kubeconfig
from tests.testenv.kubeclient import api_client
from tests.testenv.livekit import LiveKitAccess

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "livekit-agent-operator"


def render(namespace: str, release: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            str(binaries.find("helm")),
            "template",
            release,
            str(CHART),
            "-n",
            namespace,
            "--set",
            f"watchNamespaces={{{namespace}}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


async def apply(k8s: client.ApiClient, doc: dict[str, Any], namespace: str) -> None:
    kind = doc["kind"]
    core, rbac, apps = client.CoreV1Api(k8s), client.RbacAuthorizationV1Api(k8s), client.AppsV1Api(k8s)
    ns = doc["metadata"].get("namespace", namespace)
    creators = {
        "ServiceAccount": lambda: core.create_namespaced_service_account(ns, doc),
        "Service": lambda: core.create_namespaced_service(ns, doc),
        "Role": lambda: rbac.create_namespaced_role(ns, doc),
        "RoleBinding": lambda: rbac.create_namespaced_role_binding(ns, doc),
        "ClusterRole": lambda: rbac.create_cluster_role(doc),
        "ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(doc),
        "Deployment": lambda: apps.create_namespaced_deployment(ns, doc),
    }
    await creators[kind]()


async def test_operator_runs_under_the_charts_rbac_and_no_more(
    k8s: client.ApiClient,
    ns: str,
    kube: KubeAccess,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    local_kubelet: TestEnvironment,
    tmp_path: Path,
) -> None:
    release = f"r{uuid.uuid4().hex[:5]}"
    docs = render(ns, release)
    for doc in docs:  # everything the chart renders is accepted by the API server
        await apply(k8s, doc, ns)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    token = await client.CoreV1Api(k8s).create_namespaced_service_account_token(
        sa,
        ns,
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    kubeconfig = tmp_path / "operator.kubeconfig"
    write_token_kubeconfig(kubeconfig, kube.server, kube.ca_cert, sa, token.status.token)

    # no more: that identity may not read a Secret outside the namespace it serves
    other = f"t-{uuid.uuid4().hex[:8]}"
    await client.CoreV1Api(k8s).create_namespace({"metadata": {"name": other}})
    await create_credentials(client.CoreV1Api(k8s), other, livekit, name="elsewhere")
    async with await api_client(kubeconfig) as as_operator:
        with pytest.raises(ApiException) as refused:
            await client.CoreV1Api(as_operator).read_namespaced_secret("elsewhere", other)
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            await client.CoreV1Api(as_operator).list_namespaced_secret(ns)
        assert refused.value.status == 403, "secrets: get by name only, never list"

    # enough: the operator under that identity completes a job end to end
    await create_credentials(client.CoreV1Api(k8s), ns, livekit)
    op = OperatorProcess(kubeconfig, [ns], local_kubelet.workdir / "logs" / f"operator-rbac-{ns}.log")
    op.start()
    try:
        deployments = Deployments(k8s, ns)
        body = await deployments.create(agent_deployment("rbac", livekit, f"{AGENTS}:beacon_forever"))
        await op.wait_ready()
        await deployments.wait_condition("rbac", "Ready", "True", timeout=90)
        room = f"room-{uuid.uuid4().hex[:6]}"
        await dispatch(lk, body["spec"]["agentName"], room)
        await wait_participant(lk, room, "agent-")
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, "rbac", "jobsSucceeded", 1)
        assert op.alive()
        assert "Forbidden" not in op.log_text(), "the operator asked for something RBAC does not grant"
    finally:
        op.stop()
