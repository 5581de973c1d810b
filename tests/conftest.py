"""Session fixtures: the real servers of the test environment (see devenv)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devenv.environment import REPO_ROOT, TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import api_client, create_namespace
from devenv.livekit import LiveKitAccess
from tests.support import environments

_ENV: TestEnvironment | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("smoke") and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def test_env() -> Iterator[TestEnvironment]:
    global _ENV
    workdir = Path(tempfile.mkdtemp(prefix="agent-operator-test-"))
    env = TestEnvironment(workdir)
    t0 = time.monotonic()
    env.start()
    (workdir / "logs").mkdir(exist_ok=True)  # the operators' logs
    if env.node is not None:
        t1 = time.monotonic()
        try:
            environments.import_node_images(env)
        except BaseException:
            env.stop()
            raise
        env.timings["images"] = time.monotonic() - t1
    environments.SESSION.append(env)
    print(f"\n[testenv] up in {time.monotonic() - t0:.1f}s: {env.timings}")
    _ENV = env
    yield env
    env.stop()
    if env.node is not None:
        # pods were running: the teardown must have killed their containers and unmounted volumes
        left = env.node.leftovers()
        assert left == [], f"the stopped node left {left}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Keep the servers' logs when a test failed (or AGENT_OPERATOR_TEST_KEEP_LOGS=1); remove the
    work folder otherwise."""
    envs = [*([_ENV] if _ENV is not None else []), *environments.EXTRA]
    keep = session.testsfailed or os.environ.get("AGENT_OPERATOR_TEST_KEEP_LOGS") == "1"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i, env in enumerate(envs):
        if keep:
            dest = Path(os.environ.get("AGENT_OPERATOR_TEST_LOGS", REPO_ROOT / ".test-logs")) / stamp
            if i:
                dest = dest / env.workdir.name
            for folder in env.log_dirs():
                shutil.copytree(
                    folder, dest / folder.relative_to(env.workdir), dirs_exist_ok=True, symlinks=True
                )
            print(f"\n[testenv] server logs kept in {dest}")
        shutil.rmtree(env.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(test_env: TestEnvironment) -> KubeAccess:
    assert test_env.kube is not None
    return test_env.kube


@pytest.fixture(scope="session")
def livekit(test_env: TestEnvironment) -> LiveKitAccess:
    assert test_env.livekit is not None
    return test_env.livekit


@pytest.fixture
def local_kubelet(test_env: TestEnvironment) -> TestEnvironment:
    """Tests that need the node of this run's own (its containers, its work folder); not
    available against an external cluster."""
    if test_env.node is None:
        pytest.skip("needs this run's own node (not available against an external cluster)")
    return test_env


@pytest.fixture
async def k8s(kube: KubeAccess) -> AsyncIterator[client.ApiClient]:
    api = await api_client(kube.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def namespace(k8s: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace per test, with its default ServiceAccount ready; deleted afterwards."""
    core = client.CoreV1Api(k8s)
    name = f"t-{uuid.uuid4().hex[:10]}"
    await create_namespace(core, name, {"agentoperator.dev/test": "true"})
    yield name
    await core.delete_namespace(name)
