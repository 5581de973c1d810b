"""The Secret of the operator-managed runner TLS material, against the real API server."""

from __future__ import annotations

import asyncio
import base64
import datetime

import pytest
from kubernetes_asyncio import client

from agent_operator import runner_certificates
from agent_operator.kube import runner_tls_secret

pytestmark = pytest.mark.e2e
HOSTS = ("agent-operator.ops.svc",)


async def test_made_once_reused_and_renewed_from_the_same_ca(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    # two replicas starting at once: one CA between them
    first, second = await asyncio.gather(
        runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", HOSTS),
        runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", HOSTS),
    )
    assert first == second
    stored = await core.read_namespaced_secret("runner-tls", namespace)
    assert base64.b64decode(stored.data["ca.crt"]).decode() == first.ca_cert_pem

    # a restart: read as it is, nothing written
    again = await runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", HOSTS)
    assert again == first
    unchanged = await core.read_namespaced_secret("runner-tls", namespace)
    assert unchanged.metadata.resource_version == stored.metadata.resource_version

    # the runner address changed: a new serving certificate, the same CA (pods keep verifying)
    moved = await runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", ("op.other.svc",))
    assert moved.ca_cert_pem == first.ca_cert_pem
    assert moved.cert_pem != first.cert_pem
    now = datetime.datetime.now(datetime.UTC)
    assert runner_certificates.serving_problem(moved, ("op.other.svc",), now) == ""
    kept = await runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", ("op.other.svc",))
    assert kept == moved, "what was renewed is what is kept"


async def test_an_unusable_secret_is_replaced_with_a_new_ca(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    await core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "runner-tls"}, "data": {"ca.crt": base64.b64encode(b"junk").decode()}},
    )
    pki = await runner_tls_secret.load_or_create(k8s, namespace, "runner-tls", HOSTS)
    now = datetime.datetime.now(datetime.UTC)
    assert runner_certificates.serving_problem(pki, HOSTS, now) == ""
    stored = await core.read_namespaced_secret("runner-tls", namespace)
    assert set(stored.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
