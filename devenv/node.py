"""A real node: containerd + kubelet + kube-proxy of ``k8s.io/kubernetes``, inside the run's
network namespace.

The kubelet registers the node under its ``system:node:<name>`` client cert with the test CA's
serving cert on the node IP (``AGENT_OPERATOR_TEST_NODE_IP``, the veth end ``devenv/netns-run``
makes); its root dir, pod logs and cgroup root are the run's own. Pods get addresses on a CNI
bridge (``devenv/containerd.py``), kube-proxy routes cluster IPs in iptables mode. The sandbox
image is kubernetes' ``pause.c`` compiled here and imported as an OCI archive
(``devenv/oci.py``). Settings this machine needs (cgroup v1, swap, no CAP_SYS_RESOURCE):
``failCgroupV1: false``, ``cgroupDriver: cgroupfs``, ``failSwapOn: false`` and containerd's
``restrict_oom_score_adj``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import V1Pod

from devenv import binaries, oci
from devenv.containerd import Containerd, mounts_under, unmount_under
from devenv.kube import LocalKubeCluster
from devenv.procs import ServerProcess, free_port, http_ok, wait_until

NODE_NAME = "agent-operator-node"
NODE_CPU_WEIGHT_PER_CPU = 1024
CLUSTER_DNS_IP = "10.96.0.10"
PAUSE_IMAGE = "localhost/agent-operator/pause:local"
CGROUP_FS = Path("/sys/fs/cgroup")
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # fixed in the kubelet; links named per container


class NodeError(RuntimeError):
    """The real node cannot run here; the message says why."""


def require_own_netns() -> None:
    """The node rewrites iptables and sysctls: refuse to do that in the machine's own namespace."""
    if os.environ.get("AGENT_OPERATOR_TEST_NETNS_ID") != os.readlink("/proc/self/ns/net"):
        raise NodeError("the real node runs only inside its own network namespace: use devenv/netns-run")
    if os.geteuid() != 0:
        raise NodeError("the real node needs root (containerd, runc, iptables)")


def _sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name.replace(".", "/")
    with contextlib.suppress(OSError):
        path.write_text(value)


class RealNode:
    """containerd, kubelet and kube-proxy for one :class:`LocalKubeCluster`."""

    def __init__(self, workdir: Path, cluster: LocalKubeCluster, node_ip: str) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.node_ip = node_ip
        self.name = NODE_NAME
        self.logs = workdir / "logs"
        self.cgroup_root = f"/agent-operator-{secrets.token_hex(4)}"
        self.containerd = Containerd(workdir / "containerd", PAUSE_IMAGE)
        self.kubelet: ServerProcess | None = None
        self.kube_proxy: ServerProcess | None = None
        self.timings: dict[str, float] = {}

    # -- start -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        require_own_netns()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _sysctl("net.ipv4.ip_forward", "1")
        _sysctl("net.bridge.bridge-nf-call-iptables", "1")
        t0 = time.monotonic()
        self.containerd.start()
        self.containerd.import_image(self._pause_archive())
        self.timings["containerd"] = time.monotonic() - t0
        t0 = time.monotonic()
        self._make_cgroup_root()
        self._start_kubelet()
        self._start_kube_proxy(timeout)
        self._wait_node_ready(timeout)
        self.timings["kubelet+kube-proxy"] = time.monotonic() - t0  # to a Ready node

    def _pause_archive(self) -> Path:
        source = (
            Path(_go_env("GOMODCACHE"))
            / f"k8s.io/kubernetes@{binaries.K8S_VERSION}/build/pause/linux/pause.c"
        )
        if not source.is_file():
            raise NodeError(f"{source} is missing: build the kubernetes binaries first (make binaries)")
        pause = oci.build_pause(self.workdir / "pause" / "pause", source)
        archive = self.workdir / "pause" / "pause.tar"
        oci.write_image(archive, PAUSE_IMAGE, files={"/pause": pause}, entrypoint=["/pause"], user="65535")
        return archive

    def _make_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / knob).exists():
                    (path / knob).write_text((hierarchy / knob).read_text())
            if (path / "cpu.shares").exists():
                # the node's pods weigh what a kubelet's kubepods cgroup weighs on a real node
                # (1024 per CPU), not what one process weighs: the servers of the test
                # environment (livekit-server, the API server, the operator, a benchmark's
                # livekit-agents worker) are processes of the root cgroup, 1024 each, and all
                # pods together would get one process's share of a busy machine
                (path / "cpu.shares").write_text(str(NODE_CPU_WEIGHT_PER_CPU * (os.cpu_count() or 1)))

    def _start_kubelet(self) -> None:
        ca = self.cluster.ca
        assert ca is not None
        kubeconfig = self.cluster.client_kubeconfig("node", f"system:node:{self.name}", ("system:nodes",))
        serving = ca.issue("kubelet-serving", self.name, hosts=(self.node_ip, self.name), server=True)
        root = self.workdir / "kubelet"
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "containerRuntimeEndpoint": self.containerd.endpoint,
            "address": self.node_ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca.cert_path)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS_IP],
            "resolvConf": "",  # pods resolve through CoreDNS only: the namespace has no way out
            "podLogsDir": str(self.workdir / "pod-logs"),
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "protectKernelDefaults": False,
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self.kubelet = ServerProcess(
            "kubelet",
            [
                str(binaries.find("kubelet")),
                f"--config={self.workdir / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
            self.logs,
        )
        self.kubelet.start()

    def _start_kube_proxy(self, timeout: float) -> None:
        kubeconfig = self.cluster.client_kubeconfig("kube-proxy", "system:kube-proxy")
        healthz = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": "10.244.0.0/24",
            # replies from a pod on the same bridge come back through the host's conntrack
            "iptables": {"masqueradeAll": True},
            # leave the machine-wide conntrack sysctls alone
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        (self.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(config))
        self.kube_proxy = ServerProcess(
            "kube-proxy",
            [str(binaries.find("kube-proxy")), f"--config={self.workdir / 'kube-proxy.yaml'}", "--v=1"],
            self.logs,
        )
        self.kube_proxy.start()
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            timeout,
            "kube-proxy healthz",
            self.kube_proxy,
        )

    def _wait_node_ready(self, timeout: float) -> None:
        def ready() -> bool:
            node = self.cluster.get_json(f"/api/v1/nodes/{self.name}")
            conditions = node.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(ready, timeout, f"node {self.name} Ready", self.kubelet, interval=0.5)

    # -- use -------------------------------------------------------------------------------
    def import_image(self, archive: Path) -> None:
        self.containerd.import_image(archive)

    def signal_container(self, pod: V1Pod, sig: signal.Signals, container: str | None = None) -> None:
        """Send ``sig`` to a pod's container through containerd (its task, by ``containerID``)."""
        self.containerd.kill_task(container_id(pod, container), sig)

    def container_pid(self, pod: V1Pod, container: str | None = None) -> int:
        """The host PID of a pod's container's main process, from containerd."""
        return self.containerd.task_pid(container_id(pod, container))

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in (self.kube_proxy, self.kubelet):
            if proc is not None:
                proc.stop()
        self.containerd.stop()
        unmount_under(self.workdir)  # the kubelet's volumes and the bind mount of its root dir
        self._remove_cgroup_root()
        self._remove_log_links()

    def leftovers(self) -> list[str]:
        """What a stopped node left on the machine (empty after a clean ``stop``)."""
        left = [f"mount {m}" for m in mounts_under(self.workdir)]
        left += [f"shim pid {pid}" for pid in self.containerd.shims()]
        left += [
            f"cgroup {h / self.cgroup_root.lstrip('/')}"
            for h in _cgroup_hierarchies()
            if (h / self.cgroup_root.lstrip("/")).exists()
        ]
        left += [f"log link {link}" for link in self._log_links()]
        return left

    def _remove_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()

    def _log_links(self) -> list[Path]:
        """The kubelet links ``/var/log/containers/<pod>_<ns>_<container>-<id>.log`` to our logs."""
        logs = str(self.workdir / "pod-logs")
        links = []
        with contextlib.suppress(FileNotFoundError):
            for link in CONTAINER_LOG_LINKS.iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and os.readlink(link).startswith(logs):
                        links.append(link)
        return links

    def _remove_log_links(self) -> None:
        for link in self._log_links():
            with contextlib.suppress(OSError):
                link.unlink()


def container_id(pod: V1Pod, container: str | None = None) -> str:
    """The containerd ID of a pod's container (the first one unless ``container`` names one)."""
    statuses = (pod.status.container_statuses or []) if pod.status else []
    for status in statuses:
        if (container is None or status.name == container) and status.container_id:
            return str(status.container_id).removeprefix("containerd://")
    raise NodeError(f"pod {pod.metadata.name} has no started container {container or ''}".strip())


def _cgroup_hierarchies() -> list[Path]:
    if not CGROUP_FS.is_dir():
        return []
    if (CGROUP_FS / "cgroup.controllers").exists():  # cgroup v2 alone
        return [CGROUP_FS]
    # cgroup v1 (and a hybrid's v2 "unified"): every controller's mount point
    return [p for p in CGROUP_FS.iterdir() if not p.is_symlink() and os.path.ismount(p)]


def _go_env(name: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise NodeError("the `go` command is not on PATH")
    return subprocess.run([go, "env", name], capture_output=True, text=True, check=True).stdout.strip()
