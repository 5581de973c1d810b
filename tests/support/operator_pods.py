"""Pod objects standing in for the operator's own pods (in a cluster, its Deployment's).

They are made from a pod template (the chart's) and bound to a node that does not exist, so
the node never runs them; they carry the name and labels an operator pod would.
A pod bound to a node no kubelet serves would never finish a graceful deletion (and would
hold its namespace in Terminating), so they are removed with grace 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator.kube.leader_label import LEADER_LABEL

ELSEWHERE = "no-such-node"  # the kubelet runs only pods bound to its own node


@contextlib.asynccontextmanager
async def operator_pods(
    core: client.CoreV1Api, ns: str, names: Iterable[str], template: dict[str, Any], node: str = ELSEWHERE
) -> AsyncIterator[None]:
    spec = {k: v for k, v in template["spec"].items() if k != "priorityClassName"}
    created: list[str] = []
    try:
        for name in names:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": template["metadata"]["labels"]},
                "spec": {**spec, "nodeName": node},
            }
            await core.create_namespaced_pod(ns, body)
            created.append(name)
        yield
    finally:
        for name in created:
            with contextlib.suppress(ApiException):
                await core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


@contextlib.asynccontextmanager
async def kubelet_less_node(core: client.CoreV1Api, name: str) -> AsyncIterator[str]:
    """A Node object no kubelet serves: the EndpointSlice controller needs a pod's node to
    exist before it lists the pod as an endpoint."""
    await core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            await core.delete_node(name)


async def report_running(core: client.CoreV1Api, ns: str, pod: str, ip: str) -> None:
    """What a kubelet reports for a running, ready pod (no kubelet runs these)."""
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": None}
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [ready]}
    await core.patch_namespaced_pod_status(pod, ns, {"status": status})


async def endpoint_pods(discovery: client.DiscoveryV1Api, ns: str, service: str) -> list[str]:
    """The ready pods the EndpointSlice controller lists for a Service."""
    slices = await discovery.list_namespaced_endpoint_slice(
        ns, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        e.target_ref.name
        for s in slices.items
        for e in s.endpoints or []
        if e.target_ref is not None and (e.conditions is None or e.conditions.ready is not False)
    )


async def leader_label(core: client.CoreV1Api, ns: str, pod: str) -> str | None:
    got = await core.read_namespaced_pod(pod, ns)
    return (got.metadata.labels or {}).get(LEADER_LABEL)
