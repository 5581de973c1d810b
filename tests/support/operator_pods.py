"""Pod objects standing in for the operator's own pods (in a cluster, its Deployment's).

They are made from a pod template (the chart's) and bound to a node that does not exist, so
the process kubelet never runs them; they carry the name and labels an operator pod would.
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

ELSEWHERE = "no-such-node"  # the process kubelet runs only pods bound to its own node


@contextlib.asynccontextmanager
async def operator_pods(
    core: client.CoreV1Api, ns: str, names: Iterable[str], template: dict[str, Any]
) -> AsyncIterator[None]:
    spec = {k: v for k, v in template["spec"].items() if k != "priorityClassName"}
    created: list[str] = []
    try:
        for name in names:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": template["metadata"]["labels"]},
                "spec": {**spec, "nodeName": ELSEWHERE},
            }
            await core.create_namespaced_pod(ns, body)
            created.append(name)
        yield
    finally:
        for name in created:
            with contextlib.suppress(ApiException):
                await core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


async def leader_label(core: client.CoreV1Api, ns: str, pod: str) -> str | None:
    got = await core.read_namespaced_pod(pod, ns)
    return (got.metadata.labels or {}).get(LEADER_LABEL)


async def selected(core: client.CoreV1Api, ns: str, selector: dict[str, str]) -> list[str]:
    """The pods a Service with this selector sends traffic to (as the API server selects them)."""
    found = await core.list_namespaced_pod(
        ns, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
    )
    return sorted(p.metadata.name for p in found.items)
