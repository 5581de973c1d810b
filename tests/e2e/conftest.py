"""Fixtures of the operator's end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.caller import Caller
from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import api_client
from devenv.livekit import LiveKitAccess
from tests.support.operator import Deployments, OperatorProcess, install_crd, release_deployments
from tests.support.scripted_supervisor import SupervisorServer


@pytest.fixture(scope="session")
def crd(kube: KubeAccess) -> None:
    async def install() -> None:
        async with await api_client(kube.kubeconfig) as api_:
            await install_crd(api_)

    asyncio.run(install())


@pytest.fixture
async def ns(namespace: str, k8s: client.ApiClient, crd: None) -> AsyncIterator[str]:
    """The test namespace, enforcing the Pod Security Standard `restricted`.

    Afterwards (the test's operators are stopped by then) its AgentDeployments lose their
    finalizer, so deleting the namespace really ends: a later operator serving all namespaces
    (tests/e2e/test_chart_rbac.py) then finds no other test's deployments."""
    await client.CoreV1Api(k8s).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    yield namespace
    await release_deployments(k8s, namespace)


@pytest.fixture
def operator(kube: KubeAccess, ns: str, local_kubelet: TestEnvironment) -> Iterator[OperatorProcess]:
    # in the session's log folder, which is kept when a test fails
    op = OperatorProcess(kube.kubeconfig, [ns], local_kubelet.workdir / "logs" / f"operator-{ns}.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
async def lk(livekit: LiveKitAccess) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lkapi:
        yield lkapi


@pytest.fixture
def deployments(k8s: client.ApiClient, ns: str) -> Deployments:
    return Deployments(k8s, ns)


@pytest.fixture
async def supervisor() -> AsyncIterator[SupervisorServer]:
    """The scripted operator side of the runner stream, on a loopback port (the runner's tests)."""
    async with SupervisorServer() as server:
        yield server


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    """Someone in the voice tests' rooms who talks and listens; leaves after the test."""
    person = Caller()
    yield person
    await person.leave()
