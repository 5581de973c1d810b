"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The API server gets self-signed serving certs, an admin client cert (``system:masters``),
RBAC authorization, the default admission chain (PodSecurity included) and a
ServiceAccount signing key pair, so ServiceAccount tokens, TokenRequest and TokenReview
work as in a cluster. The controller-manager runs only the controllers the tests rely
on (garbage collection, namespaces, default ServiceAccounts, the root CA ConfigMap, and the
EndpointSlices that say which pods a Service sends traffic to).

With ``node_ip`` set (the real node, ``devenv/node.py``), the API server also listens on that
address and advertises it (pods reach it through the ``kubernetes`` Service), authorizes with
``Node,RBAC``, reaches kubelets by their InternalIP with a client cert of its own (logs, exec),
cluster IPs become real (kube-proxy routes them), and a kube-scheduler places pods.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devenv import binaries
from devenv.pki import CertPair, LocalCA, service_account_keys
from devenv.procs import ServerProcess, free_port, http_ok, wait_until

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# a real node registers tainted not-ready; the node lifecycle controller lifts the taint once
# the kubelet reports Ready. The Deployment and ReplicaSet controllers run the operator's own
# Deployment when the chart is installed (`helm install`, devenv/helm_release.py).
NODE_CONTROLLERS = ("node-lifecycle-controller", "deployment-controller", "replicaset-controller")
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "endpointslice-controller",
)


@dataclasses.dataclass
class KubeAccess:
    """How a client reaches the API server."""

    server: str
    kubeconfig: Path
    ca_cert: Path | None
    admin: CertPair | None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert) if self.ca_cert else None)
        if self.admin is not None:
            ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, cert: CertPair) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert.cert), "client-key": str(cert.key)}}
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def write_token_kubeconfig(path: Path, server: str, ca: Path | None, user: str, token: str) -> None:
    """A kubeconfig that authenticates with a bearer token (a ServiceAccount's, say)."""
    cluster: dict[str, object] = {"server": server}
    if ca is not None:
        cluster["certificate-authority"] = str(ca)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


class LocalKubeCluster:
    """etcd + kube-apiserver + kube-controller-manager, started on free loopback ports."""

    def __init__(self, workdir: Path, node_ip: str | None = None) -> None:
        self.workdir = workdir
        self.node_ip = node_ip
        self.ca: LocalCA | None = None
        self.scheduler: ServerProcess | None = None
        self.logs = workdir / "logs"
        self.pki = workdir / "pki"
        self.etcd: ServerProcess | None = None
        self.apiserver: ServerProcess | None = None
        self.controller_manager: ServerProcess | None = None
        self.access: KubeAccess | None = None
        self.sa_keys: CertPair | None = None
        self._etcd_port = 0
        self._api_port = 0

    # -- start -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> KubeAccess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = self.ca = LocalCA(self.pki)
        hosts = ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        if self.node_ip:
            hosts += [self.node_ip, KUBERNETES_SERVICE_IP, "kubernetes.default.svc.cluster.local"]
        serving = ca.issue("apiserver", "kube-apiserver", hosts=tuple(hosts), server=True)
        admin = ca.issue("admin", "test-admin", orgs=("system:masters",))
        kcm = ca.issue("controller-manager", "system:kube-controller-manager")
        self.sa_keys = service_account_keys(self.pki)

        self._start_etcd(timeout)
        self._start_apiserver(ca, serving, timeout)
        server = f"https://127.0.0.1:{self._api_port}"
        kubeconfig = self.workdir / "admin.kubeconfig"
        write_kubeconfig(kubeconfig, server, ca.cert_path, "admin", admin)
        write_kubeconfig(self.workdir / "kcm.kubeconfig", server, ca.cert_path, "kcm", kcm)
        self.access = KubeAccess(server, kubeconfig, ca.cert_path, admin)
        self._wait_ready(timeout)
        self._start_controller_manager(ca, timeout)
        if self.node_ip:
            self._start_scheduler()
        return self.access

    def client_kubeconfig(self, name: str, common_name: str, orgs: tuple[str, ...] = ()) -> Path:
        """A kubeconfig with a client cert of the cluster CA (a node's, kube-proxy's, ...)."""
        assert self.ca is not None
        assert self.access is not None
        path = self.workdir / f"{name}.kubeconfig"
        write_kubeconfig(
            path, self.access.server, self.ca.cert_path, name, self.ca.issue(name, common_name, orgs=orgs)
        )
        return path

    def _start_etcd(self, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self._etcd_port = client
        self.etcd = ServerProcess(
            "etcd",
            [
                str(binaries.find("etcd")),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.logs,
        )
        self.etcd.start()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{client}/health"), timeout, "etcd health", self.etcd)

    def _start_apiserver(self, ca: LocalCA, serving: CertPair, timeout: float) -> None:
        assert self.sa_keys is not None
        self._api_port = free_port()
        self.apiserver = ServerProcess(
            "kube-apiserver",
            [
                str(binaries.find("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
                f"--secure-port={self._api_port}",
                f"--cert-dir={self.pki}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
                # without a real node, cluster IPs are allocated in etcd only and no traffic is
                # ever sent to them; with one, kube-proxy routes them
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=false",
                *self._node_flags(ca),
                "--v=1",
            ],
            self.logs,
        )
        self.apiserver.start()

    def request_json(self, method: str, path: str, body: object | None = None) -> Any:
        """One admin call to the API server (plain JSON, for setting up the environment)."""
        assert self.access is not None
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - the local API server
            self.access.server + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10, context=self.access.ssl_context()) as resp:  # noqa: S310
            return json.loads(resp.read() or b"{}")

    def get_json(self, path: str) -> Any:
        return self.request_json("GET", path)

    def _node_flags(self, ca: LocalCA) -> list[str]:
        if not self.node_ip:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
            ]
        # the API server's own client cert for kubelets (logs, exec); system:masters passes the
        # kubelet's webhook authorization
        kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",)
        )
        return [
            "--bind-address=0.0.0.0",  # inside the run's own network namespace only
            f"--advertise-address={self.node_ip}",
            "--authorization-mode=Node,RBAC",
            "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={ca.cert_path}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
        ]

    def _start_scheduler(self) -> None:
        kubeconfig = self.client_kubeconfig("scheduler", "system:kube-scheduler")
        self.scheduler = ServerProcess(
            "kube-scheduler",
            [
                str(binaries.find("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--v=1",
            ],
            self.logs,
        )
        self.scheduler.start()

    def _wait_ready(self, timeout: float) -> None:
        assert self.access is not None
        ctx = self.access.ssl_context()
        wait_until(
            lambda: http_ok(f"{self.access.server}/readyz", ctx) if self.access else False,
            timeout,
            "kube-apiserver /readyz",
            self.apiserver,
        )

    def _start_controller_manager(self, ca: LocalCA, timeout: float) -> None:
        assert self.sa_keys is not None
        self.controller_manager = ServerProcess(
            "kube-controller-manager",
            [
                str(binaries.find("kube-controller-manager")),
                f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if self.node_ip else ()))}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                f"--root-ca-file={ca.cert_path}",
                f"--service-account-private-key-file={self.sa_keys.key}",
                "--use-service-account-credentials=true",
                "--v=1",
            ],
            self.logs,
        )
        self.controller_manager.start()

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in (self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        """Stop the API server and start it again on the same port (fault injection)."""
        import time

        assert self.apiserver is not None
        self.apiserver.stop()
        time.sleep(down_for)
        self.apiserver.start()
        self._wait_ready(60)


def external_access(kubeconfig: Path) -> KubeAccess:
    """Access to an existing cluster named by a kubeconfig (opt-in mode)."""
    data = yaml.safe_load(kubeconfig.read_text())
    ctx_name = data.get("current-context")
    ctx = next(c["context"] for c in data["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in data["clusters"] if c["name"] == ctx["cluster"])
    ca = cluster.get("certificate-authority")
    return KubeAccess(cluster["server"], kubeconfig, Path(ca) if ca else None, None)
