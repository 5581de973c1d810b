"""TLS on the runner stream, operator side: runner pods verify the operator's certificate with
the CA the operator puts in their spec, a plaintext client gets nowhere, and a renewed
certificate (the files rewritten, as a Secret volume update does) is served without a
restart while a broken pair is refused and the current one kept."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client
from livekit import api

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from agent_operator.supervisor.tls import ReloadingServerCertificate
from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from devenv.pki import CertPair, LocalCA
from tests.support import environments
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    job_pod,
    starts_reported,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e


def served_common_name(port: int, ca: Path, host: str = "127.0.0.1") -> str:
    """The CN of the certificate the server on ``host:port`` presents, verified against ``ca``
    for that host."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        peer: Any = tls.getpeercert()
    subject = {key: value for rdn in peer["subject"] for key, value in rdn}
    return str(subject["commonName"])


async def plaintext_hello(port: int, namespace: str) -> None:
    """A Hello in plaintext to an operator's runner port (on the node IP, where pods dial it)."""
    async with grpc.aio.insecure_channel(f"{environments.node_ip()}:{port}") as channel:
        call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION, pod_namespace=namespace, pod_name="x", pod_uid="y"
        )
        await call.write(pb.RunnerMessage(hello=hello))
        await call.read()


class Silent(pb_grpc.RunnerSupervisorServicer):
    """A server that only does TLS handshakes in this test."""

    async def Attach(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "handshakes only")


def install(pair: CertPair, cert: Path, key: Path) -> None:
    """Replace the served files in one step each, as a Secret volume's symlink swap does."""
    for src, dst in ((pair.key, key), (pair.cert, cert)):
        tmp = dst.with_suffix(".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


async def test_reload_serves_a_renewed_pair_and_keeps_the_current_one_on_a_broken_pair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = LocalCA(tmp_path / "pki")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    install(ca.issue("first", "operator-first", hosts=("127.0.0.1",), server=True), cert, key)
    certificate = ReloadingServerCertificate(cert, key)
    server = grpc.aio.server()
    pb_grpc.add_RunnerSupervisorServicer_to_server(Silent(), server)
    port = server.add_secure_port("127.0.0.1:0", certificate.credentials())
    await server.start()
    try:
        assert await asyncio.to_thread(served_common_name, port, ca.cert_path) == "operator-first"
        install(ca.issue("second", "operator-second", hosts=("127.0.0.1",), server=True), cert, key)
        assert await asyncio.to_thread(served_common_name, port, ca.cert_path) == "operator-second"
        assert certificate.reloads == 1

        # half a renewal: a new certificate next to the old key does not load
        third = ca.issue("third", "operator-third", hosts=("127.0.0.1",), server=True)
        tmp = cert.with_suffix(".new")
        tmp.write_bytes(third.cert.read_bytes())
        os.replace(tmp, cert)
        with caplog.at_level(logging.WARNING, "agent_operator.supervisor.tls"):
            assert await asyncio.to_thread(served_common_name, port, ca.cert_path) == "operator-second"
            assert await asyncio.to_thread(served_common_name, port, ca.cert_path) == "operator-second"
        warnings = [r for r in caplog.records if "not reloaded" in r.getMessage()]
        assert len(warnings) == 1, "warned once per change, not on every handshake"
        # the key arrives: the pair is whole again
        tmp = key.with_suffix(".new")
        tmp.write_bytes(third.key.read_bytes())
        os.replace(tmp, key)
        assert await asyncio.to_thread(served_common_name, port, ca.cert_path) == "operator-third"
    finally:
        await server.stop(0)


async def test_jobs_run_over_tls_and_survive_a_certificate_renewal(
    kube: KubeAccess,
    ns: str,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    local_kubelet: TestEnvironment,
    tmp_path: Path,
) -> None:
    ca = LocalCA(tmp_path / "pki")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    node_ip = environments.node_ip()  # the runner address pods verify the certificate for
    install(ca.issue("first", "operator-first", hosts=(node_ip,), server=True), cert, key)
    op = OperatorProcess(
        kube.kubeconfig,
        [ns],
        local_kubelet.workdir / "logs" / f"operator-tls-{ns}.log",
        extra_args=[
            f"--runner-tls-cert={cert}",
            f"--runner-tls-key={key}",
            f"--runner-tls-ca={ca.cert_path}",
        ],
    )
    op.start()
    try:
        deployments = Deployments(k8s, ns)
        await create_credentials(client.CoreV1Api(k8s), ns, livekit)
        body = await deployments.create(agent_deployment("secure", livekit, f"{AGENTS}:beacon_forever"))
        await op.wait_ready()
        await deployments.wait_condition("secure", "Ready", "True", timeout=90)

        room = f"tls-{uuid.uuid4().hex[:6]}"
        await dispatch(lk, body["spec"]["agentName"], room)
        pod = await job_pod(deployments, "secure")
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["AGENT_OPERATOR_TLS_CA_PEM"].strip() == ca.cert_path.read_text().strip()
        await wait_participant(lk, room, "agent-")

        # a plaintext client does not even reach gRPC
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plaintext_hello(op.runner_port, ns)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # renewal: the operator serves the new certificate; the running call goes on and a new
        # job attaches over it
        install(ca.issue("second", "operator-second", hosts=(node_ip,), server=True), cert, key)
        served = await asyncio.to_thread(served_common_name, op.runner_port, ca.cert_path, node_ip)
        assert served == "operator-second"
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, "secure", "jobsSucceeded", 1)
        second = f"tls-{uuid.uuid4().hex[:6]}"
        await dispatch(lk, body["spec"]["agentName"], second)
        await wait_participant(lk, second, "agent-")
        await starts_reported(deployments, "secure", 2)
        await lk.room.delete_room(api.DeleteRoomRequest(room=second))
        await status_equals(deployments, "secure", "jobsSucceeded", 2)
        assert "runner TLS certificate reloaded" in op.log_text()
        assert op.alive()
    finally:
        op.stop()


async def test_bad_tls_flags_stop_the_operator_with_a_clear_error(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    pair = ca.issue("op", "operator", hosts=("127.0.0.1",), server=True)
    other = ca.issue("other", "other", hosts=("127.0.0.1",), server=True)
    cases = {
        "go together": [f"--runner-tls-cert={pair.cert}"],
        "cannot be used": [
            f"--runner-tls-cert={pair.cert}",
            f"--runner-tls-key={other.key}",  # not this certificate's key
            f"--runner-tls-ca={ca.cert_path}",
        ],
        "holds no PEM certificate": [
            f"--runner-tls-cert={pair.cert}",
            f"--runner-tls-key={pair.key}",
            f"--runner-tls-ca={pair.key}",
        ],
    }
    for message, flags in cases.items():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_operator.cli",
            "run",
            "--runner-address=127.0.0.1:1",
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, err
        assert message in err.decode(), err
        assert "BEGIN" not in err.decode(), "no key material in the error"


async def test_managed_certificate_is_made_once_and_reused_after_a_restart(
    kube: KubeAccess,
    ns: str,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    local_kubelet: TestEnvironment,
    tmp_path: Path,
) -> None:
    """No certificate brought: the operator makes a CA and a serving certificate, keeps them in
    a Secret, gives runner pods the CA, and a restarted operator serves the same ones, so a
    call that outlives the restart re-attaches and the next job attaches too."""
    core = client.CoreV1Api(k8s)
    op = OperatorProcess(
        kube.kubeconfig,
        [ns],
        local_kubelet.workdir / "logs" / f"operator-managed-tls-{ns}.log",
        extra_args=["--runner-tls-secret=runner-tls", f"--runner-tls-secret-namespace={ns}"],
    )
    op.start()
    try:
        deployments = Deployments(k8s, ns)
        await create_credentials(core, ns, livekit)
        body = await deployments.create(agent_deployment("managed", livekit, f"{AGENTS}:beacon_forever"))
        await op.wait_ready()
        await deployments.wait_condition("managed", "Ready", "True", timeout=90)
        secret = await core.read_namespaced_secret("runner-tls", ns)
        assert set(secret.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        ca_pem = base64.b64decode(secret.data["ca.crt"]).decode()
        ca_path = tmp_path / "ca.crt"
        ca_path.write_text(ca_pem)
        node_ip = environments.node_ip()
        served = await asyncio.to_thread(served_common_name, op.runner_port, ca_path, node_ip)
        assert served == node_ip, "the serving certificate names the runner address"

        room = f"tls-{uuid.uuid4().hex[:6]}"
        await dispatch(lk, body["spec"]["agentName"], room)
        pod = await job_pod(deployments, "managed")
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["AGENT_OPERATOR_TLS_CA_PEM"] == ca_pem
        agent = await wait_participant(lk, room, "agent-")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plaintext_hello(op.runner_port, ns)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        op.kill()
        op.start()
        await op.wait_ready()
        await deployments.wait_condition("managed", "Ready", "True", timeout=90)
        again = await core.read_namespaced_secret("runner-tls", ns)
        assert again.metadata.resource_version == secret.metadata.resource_version, "reused, not remade"
        assert await asyncio.to_thread(served_common_name, op.runner_port, ca_path, node_ip) == node_ip

        async def adopted() -> bool:
            return any(e.reason == "JobAdopted" for e in await deployments.events("managed"))

        await eventually(adopted, 60, "the running job's runner re-attached over TLS")
        assert (await wait_participant(lk, room, "agent-")).sid == agent.sid
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, "managed", "jobsSucceeded", 1, timeout=90)
        assert op.log_text().count("runner TLS: created a CA") == 1, "one CA, made by the first operator"
    finally:
        op.stop()
