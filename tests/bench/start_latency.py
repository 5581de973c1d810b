"""StartJobRequest -> StartJobResponse against the local livekit-server (the runner joining the
room and starting its entrypoint), over real runner pods attached to a real supervisor.

    devenv/netns-run python -m tests.bench.start_latency [--n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path

from kubernetes_asyncio import client

from devenv.environment import TestEnvironment
from devenv.kubeclient import api_client, create_namespace
from tests.support import environments
from tests.support.runner_harness import Harness


async def run(env: TestEnvironment, n: int) -> list[float]:
    assert env.kube is not None
    assert env.livekit is not None
    async with await api_client(env.kube.kubeconfig) as k8s:
        core = client.CoreV1Api(k8s)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        await create_namespace(core, ns)
        h = Harness(k8s, ns, env.livekit)
        await h.start_supervisor()
        try:
            for _ in range(n):
                pod = await h.runner("idle")  # attached and idle: the timing starts at the job
                await h.start_job(pod, f"start-{uuid.uuid4().hex[:6]}")
                assert h.supervisor is not None
                await h.supervisor.shutdown_job(pod.metadata.uid, "benchmark", grace=10)
        finally:
            await h.close()
        return h.start_latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    env = TestEnvironment(Path(tempfile.mkdtemp(prefix="bench-start-")))
    env.start()
    environments.import_node_images(env)  # the test agent image its job pods run
    try:
        values = asyncio.run(run(env, args.n))
    finally:
        env.stop()
    ordered = sorted(values)
    median = statistics.median(values) * 1000
    print(
        f"StartJobRequest -> StartJobResponse over {len(values)} jobs: median {median:.0f} ms, "
        f"min {ordered[0] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
