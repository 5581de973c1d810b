"""The whole local test environment: Kubernetes control plane, a real node, livekit-server.

The node is real (``devenv/node.py``, ``devenv/dns.py``): kube-scheduler, containerd + runc with
CNI, the kubelet, kube-proxy and CoreDNS, inside the network namespace of ``devenv/netns-run``
(it refuses to start elsewhere). Job pods are containers of images imported into its containerd.

To run the same tests against servers that already exist, set (opt-in):

* ``AGENT_OPERATOR_TEST_KUBECONFIG``: a kubeconfig of an existing cluster (its nodes run the
  pods; tests that need this run's own node are skipped);
* ``AGENT_OPERATOR_TEST_LIVEKIT_URL``, ``AGENT_OPERATOR_TEST_LIVEKIT_API_KEY``,
  ``AGENT_OPERATOR_TEST_LIVEKIT_API_SECRET``: an existing LiveKit server.

    python -m devenv.environment      # start everything, print access, wait for Ctrl-C
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from devenv import binaries
from devenv.dns import ClusterDNS
from devenv.kube import KubeAccess, LocalKubeCluster, external_access
from devenv.livekit import LiveKitAccess, LocalLiveKit
from devenv.node import NodeError, RealNode, require_own_netns

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BINARIES = ["kube-scheduler", "kubelet", "kube-proxy", "coredns"]


class TestEnvironment:
    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path, livekit: bool = True, kubelet: bool = True) -> None:
        """``kubelet=False``: the control plane alone, no node (no pod runs; API tests only)."""
        self.workdir = workdir
        self.want_livekit = livekit
        self.want_node = kubelet
        self.cluster: LocalKubeCluster | None = None
        self.node: RealNode | None = None
        self.dns: ClusterDNS | None = None
        self.livekit_server: LocalLiveKit | None = None
        self.kube: KubeAccess | None = None
        self.livekit: LiveKitAccess | None = None
        self.timings: dict[str, float] = {}

    @property
    def local_kube(self) -> bool:
        return self.cluster is not None

    def start(self) -> None:
        t0 = time.monotonic()
        external_kube = os.environ.get("AGENT_OPERATOR_TEST_KUBECONFIG")
        external_lk = os.environ.get("AGENT_OPERATOR_TEST_LIVEKIT_URL")
        needed = []
        if not external_kube:
            needed += ["etcd", "kube-apiserver", "kube-controller-manager"]
            if self.want_node:
                needed += NODE_BINARIES
        if not external_lk and self.want_livekit:
            needed += ["livekit-server"]
        if needed:
            binaries.ensure_all(needed)
        self.timings["binaries"] = time.monotonic() - t0
        try:
            self._start_kube(external_kube)
            if self.want_livekit:
                self._start_livekit(external_lk)
        except BaseException:
            self.stop()
            raise

    def _start_kube(self, external: str | None) -> None:
        t0 = time.monotonic()
        if external:
            self.kube = external_access(Path(external))
            return
        node_ip = None
        if self.want_node:
            node_ip = os.environ.get("AGENT_OPERATOR_TEST_NODE_IP")
            if not node_ip:
                raise NodeError("the node needs AGENT_OPERATOR_TEST_NODE_IP: run under devenv/netns-run")
            require_own_netns()  # before the API server listens beyond loopback
        self.cluster = LocalKubeCluster(self.workdir / "kube", node_ip=node_ip)
        self.kube = self.cluster.start()
        self.timings["kube"] = time.monotonic() - t0
        if node_ip is not None:
            self.node = RealNode(self.workdir / "node", self.cluster, node_ip)
            self.node.start()
            self.timings.update(self.node.timings)
            t0 = time.monotonic()
            self.dns = ClusterDNS(self.workdir / "dns", self.cluster, node_ip)
            self.dns.start()
            self.timings["dns"] = time.monotonic() - t0

    def _start_livekit(self, external: str | None) -> None:
        t0 = time.monotonic()
        if external:
            self.livekit = LiveKitAccess(
                external,
                os.environ["AGENT_OPERATOR_TEST_LIVEKIT_API_KEY"],
                os.environ["AGENT_OPERATOR_TEST_LIVEKIT_API_SECRET"],
            )
            return
        self.livekit_server = LocalLiveKit(self.workdir / "livekit")
        self.livekit = self.livekit_server.start()
        self.timings["livekit"] = time.monotonic() - t0

    def stop(self) -> None:
        for part in (self.dns, self.node, self.livekit_server, self.cluster):
            if part is not None:
                part.stop()

    def log_dirs(self) -> list[Path]:
        return [
            p
            for p in (
                self.workdir / "logs",
                self.workdir / "kube" / "logs",
                self.workdir / "livekit" / "logs",
                self.workdir / "node" / "logs",
                self.workdir / "node" / "containerd" / "logs",
                self.workdir / "node" / "pod-logs",
                self.workdir / "dns" / "logs",
            )
            if p.exists()
        ]


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="agent-operator-env-"))
    env = TestEnvironment(workdir)
    t0 = time.monotonic()
    env.start()
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in env.timings.items())
    print(f"environment up in {time.monotonic() - t0:.1f}s ({parts})")
    assert env.kube is not None
    assert env.livekit is not None
    print(f"KUBECONFIG={env.kube.kubeconfig}")
    print(f"LIVEKIT_URL={env.livekit.url}")
    print(f"LIVEKIT_API_KEY={env.livekit.api_key}")
    print(f"LIVEKIT_API_SECRET=<in {workdir}/livekit/livekit.yaml>")
    print(f"logs: {workdir}")
    print("Ctrl-C to stop", flush=True)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
