"""The chart installed on the local cluster as a user installs it, with the operator image built here.

`make demo` (devenv/demo.py) and tests/e2e/test_helm_release.py share this: the operator image
(``make images``) is imported into the real node's containerd, and ``helm install`` runs the
chart with its defaults except the image (repository, tag, ``pullPolicy: IfNotPresent``). The
chart has no LiveKit values: each AgentDeployment names its LiveKit server and a Secret.
The operator then runs as a pod of the chart's Deployment under its ServiceAccount and RBAC;
it reaches the API server in-cluster (the ``kubernetes`` Service, through kube-proxy) and runner
pods reach it at ``<release>.<namespace>.svc:50051`` (CoreDNS, kube-proxy), over TLS.

The release is named like the chart, so its objects are named ``livekit-agent-operator`` and
the runner address is ``livekit-agent-operator.<namespace>.svc:50051``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devenv import binaries
from devenv.environment import REPO_ROOT
from devenv.images import Image
from devenv.kubeclient import create_namespace, eventually
from devenv.node import RealNode

CHART = REPO_ROOT / "charts" / "livekit-agent-operator"
RELEASE = "livekit-agent-operator"
NAMESPACE = "agent-operator"
RUNNER_PORT = 50051  # the chart's default runner.port
METRICS_PORT = 8080  # the chart's default metrics.port


class HelmError(RuntimeError):
    """A helm command failed; the message carries its output."""


def split_ref(ref: str) -> tuple[str, str]:
    """``repo/name:tag`` -> (``repo/name``, ``tag``)."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        raise ValueError(f"image reference {ref!r} has no tag")
    return repository, tag


def load_operator_image(node: RealNode, image: Image, also_tag: str | None = None) -> str:
    """Import the operator image into the node's containerd; with ``also_tag``, also under that
    tag of the same repository (the same content, as a new release of it would be). The
    reference imported last."""
    node.import_image(image.archive)
    if also_tag is None:
        return image.tag
    repository, _ = split_ref(image.tag)
    ref = f"{repository}:{also_tag}"
    node.containerd.ctr("images", "tag", "--force", image.tag, ref)
    return ref


class OperatorRelease:
    """One Helm release of the chart on a cluster reached with ``kubeconfig``."""

    def __init__(self, kubeconfig: Path, namespace: str = NAMESPACE, release: str = RELEASE) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.release = release
        self.timings: dict[str, float] = {}

    @property
    def runner_address(self) -> str:
        return f"{self.release}.{self.namespace}.svc:{RUNNER_PORT}"

    async def helm(self, *args: str, timeout: float = 600) -> str:
        """Run helm against the cluster (without blocking the event loop); its stdout."""
        proc = await asyncio.create_subprocess_exec(
            str(binaries.find("helm")),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise HelmError(f"helm {' '.join(args)} did not finish in {timeout}s") from None
        if proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{err.decode().strip()}")
        return out.decode()

    def _image_values(self, ref: str) -> list[str]:
        repository, tag = split_ref(ref)
        values = [f"image.repository={repository}", f"image.tag={tag}", "image.pullPolicy=IfNotPresent"]
        return [arg for value in values for arg in ("--set", value)]

    async def install(self, core: client.CoreV1Api, image_ref: str, timeout: float = 300) -> float:
        """``helm install`` into a namespace enforcing the Pod Security Standard ``restricted``,
        waiting until the operator's Deployment is available; the seconds it took."""
        t0 = time.monotonic()
        with contextlib.suppress(ApiException):  # 409: it exists (a demo run again, say)
            await create_namespace(core, self.namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
        await self.helm(
            "install",
            self.release,
            str(CHART),
            f"--namespace={self.namespace}",
            *self._image_values(image_ref),
            "--wait",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )
        self.timings["install"] = time.monotonic() - t0
        return self.timings["install"]

    async def upgrade(self, image_ref: str, timeout: float = 300) -> float:
        """``helm upgrade`` to another operator image (the other values kept), waiting for the
        rollout; the seconds it took."""
        t0 = time.monotonic()
        await self.helm(
            "upgrade",
            self.release,
            str(CHART),
            f"--namespace={self.namespace}",
            "--reuse-values",
            *self._image_values(image_ref),
            "--wait",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )
        self.timings["upgrade"] = time.monotonic() - t0
        return self.timings["upgrade"]

    async def uninstall(self, timeout: float = 300) -> None:
        await self.helm(
            "uninstall", self.release, f"--namespace={self.namespace}", "--wait", f"--timeout={int(timeout)}s"
        )

    async def installed(self) -> bool:
        listed = await self.helm("list", f"--namespace={self.namespace}", "--short")
        return self.release in listed.split()

    async def operator_pods(self, core: client.CoreV1Api) -> list[Any]:
        """The release's operator pods that are not being deleted."""
        pods = await core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/instance={self.release}"
        )
        return [p for p in pods.items if not p.metadata.deletion_timestamp]

    async def leader_pod(self, core: client.CoreV1Api, timeout: float = 60) -> Any:
        """The operator pod the runner Service selects (the leader label)."""

        async def one() -> Any:
            leaders = [
                p
                for p in await self.operator_pods(core)
                if (p.metadata.labels or {}).get("agentoperator.dev/leader") == "true"
            ]
            return leaders[0] if len(leaders) == 1 else None

        return await eventually(one, timeout, f"the leading operator pod of {self.release}")

    async def logs(self, core: client.CoreV1Api, pod: str) -> str:
        """An operator pod's log (through the API server and the kubelet, as `kubectl logs`)."""
        text: str = await core.read_namespaced_pod_log(pod, self.namespace, container="operator")
        return text

    async def metrics(self, discovery: client.DiscoveryV1Api) -> str:
        """The operator's /metrics, scraped as Prometheus scrapes it: at the address the metrics
        Service's EndpointSlice lists (the pod IP; this network namespace has no route to cluster
        IPs, as a node with no default route has none)."""
        slices = await discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={self.release}-metrics"
        )
        addresses = [
            address
            for piece in slices.items
            for endpoint in piece.endpoints or []
            if endpoint.conditions is None or endpoint.conditions.ready
            for address in endpoint.addresses
        ]
        if not addresses:
            raise HelmError(f"the Service {self.release}-metrics has no ready endpoint")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://{addresses[0]}:{METRICS_PORT}/metrics") as resp,
        ):
            resp.raise_for_status()
            return await resp.text()
