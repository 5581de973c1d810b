"""Cluster DNS for the real node: CoreDNS (from its Go module) serving ``cluster.local`` from the
API, behind the ``kube-dns`` Service in ``kube-system`` at the ClusterIP the kubelet's
``clusterDNS`` names.

CoreDNS runs as a process of the run's network namespace, listening on the node IP; the
``kube-dns`` Service has no selector and one EndpointSlice naming that address, so pods reach it
through kube-proxy exactly as they reach a CoreDNS pod on a cluster. It reads the API as the user
``system:coredns`` with the read-only rights the kubernetes plugin needs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devenv import binaries
from devenv.kube import LocalKubeCluster
from devenv.node import CLUSTER_DNS_IP
from devenv.procs import ServerProcess, free_port, http_ok, wait_until

USER = "system:coredns"
ROLE = "agent-operator-devenv:coredns"


class ClusterDNS:
    def __init__(self, workdir: Path, cluster: LocalKubeCluster, node_ip: str) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.node_ip = node_ip
        self.process: ServerProcess | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._grant_read()
        kubeconfig = self.cluster.client_kubeconfig("coredns", USER)
        ready = free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.node_ip}
    errors
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )
        self.process = ServerProcess(
            "coredns", [str(binaries.find("coredns")), "-conf", str(corefile)], self.workdir / "logs"
        )
        self.process.start()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ready}/ready"), timeout, "CoreDNS ready", self.process)
        self._publish_service()
        wait_until(_routed, timeout, f"kube-proxy rules for {CLUSTER_DNS_IP}", self.process, interval=0.3)

    def _grant_read(self) -> None:
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self.cluster.request_json(
            "POST",
            f"{rbac}/clusterroles",
            {
                "metadata": {"name": ROLE},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
        )
        self.cluster.request_json(
            "POST",
            f"{rbac}/clusterrolebindings",
            {
                "metadata": {"name": ROLE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
            },
        )

    def _publish_service(self) -> None:
        labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
        ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
        self.cluster.request_json(
            "POST",
            "/api/v1/namespaces/kube-system/services",
            {
                "metadata": {"name": "kube-dns", "labels": labels},
                "spec": {
                    "clusterIP": CLUSTER_DNS_IP,
                    "ports": [{"name": n, "protocol": p, "port": 53, "targetPort": 53} for n, p in ports],
                },
            },
        )
        self.cluster.request_json(
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            {
                "metadata": {
                    "name": "kube-dns-node",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "agent-operator-devenv",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.node_ip], "conditions": {"ready": True}}],
                "ports": [{"name": n, "protocol": p, "port": 53} for n, p in ports],
            },
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _routed() -> bool:
    """kube-proxy has written the NAT rules that send the DNS ClusterIP to CoreDNS."""
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False).stdout
    return f"-d {CLUSTER_DNS_IP}/32" in out and "KUBE-SEP" in out
