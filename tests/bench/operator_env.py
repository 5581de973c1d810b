"""The test environment a benchmark runs the operator in: the servers, a namespace with the
LiveKit credentials, and the operator as a process.

With ``AGENT_OPERATOR_TEST_NODE=real`` the job pods are containers of the test agent image on
the real node (imported here, as the e2e session does); otherwise processes of the process
kubelet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from devenv.environment import TestEnvironment
from devenv.kubeclient import api_client, create_namespace
from devenv.livekit import LiveKitAccess
from tests.support import environments
from tests.support.operator import Deployments, OperatorProcess, create_credentials, install_crd


@contextlib.contextmanager
def environment(prefix: str) -> Iterator[TestEnvironment]:
    """The servers (and the real node with its images, when asked for), stopped on exit."""
    env = TestEnvironment(Path(tempfile.mkdtemp(prefix=prefix)))
    env.start()
    try:
        (env.workdir / "logs").mkdir(exist_ok=True)
        if env.node is not None:
            environments.import_node_images(env)
        environments.SESSION.append(env)
        yield env
    finally:
        environments.SESSION.clear()
        env.stop()


def node_kind(env: TestEnvironment) -> str:
    return "real node (job pods are containers)" if env.node is not None else "process kubelet"


@dataclasses.dataclass
class OperatorBench:
    env: TestEnvironment
    livekit: LiveKitAccess
    k8s: client.ApiClient
    deployments: Deployments
    operator: OperatorProcess


@contextlib.asynccontextmanager
async def operator_in(env: TestEnvironment, log_name: str) -> AsyncIterator[OperatorBench]:
    """A fresh namespace with the credentials, and an operator serving it (stopped on exit)."""
    assert env.kube is not None
    assert env.livekit is not None
    async with await api_client(env.kube.kubeconfig) as k8s:
        await install_crd(k8s)
        core = client.CoreV1Api(k8s)
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        await create_namespace(core, namespace)
        await create_credentials(core, namespace, env.livekit)
        operator = OperatorProcess(env.kube.kubeconfig, [namespace], env.workdir / "logs" / log_name)
        operator.start()
        try:
            await operator.wait_ready()
            yield OperatorBench(env, env.livekit, k8s, Deployments(k8s, namespace), operator)
        finally:
            operator.stop()


def log_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    """The operator's JSON log lines (others skipped)."""
    out: list[dict[str, Any]] = []
    for line in operator.log_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out
