"""`make demo`: the operator running one AgentDeployment on the local environment.

Starts etcd, kube-apiserver, kube-controller-manager, the real node and livekit-server,
installs the CRD, runs ``agent-operator run``, creates a Secret and an AgentDeployment with
a warm pool of one, dispatches a job to a room, and shows the agent joining, the pod, the
status and the Events; then deletes the room and shows the job ending. With ``--oneshot`` it
stops there; otherwise it keeps everything running until Ctrl-C and prints how to reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from livekit import api

from devenv.environment import TestEnvironment
from devenv.kubeclient import api_client, create_namespace, eventually
from tests.support import environments
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    install_crd,
    wait_participant,
)

METRICS_SHOWN = (
    "agent_operator_jobs_",
    "agent_operator_job_start_latency_seconds_sum",
    "agent_operator_job_placements_total",
    "agent_operator_worker_connected",
    "agent_operator_pool_",
)


def show_status(body: dict[str, Any]) -> None:
    status = body.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    print(
        f"  {'NAME':<12} {'REGISTERED':<11} {'READY':<6} {'ACTIVE':<7} {'IDLE':<5} {'SUCCEEDED':<10} FAILED"
    )
    print(
        f"  {body['metadata']['name']:<12} {conds.get('Registered', {}).get('status', '?'):<11} "
        f"{conds.get('Ready', {}).get('status', '?'):<6} {status.get('activeJobs', 0):<7} "
        f"{status.get('idlePods', 0):<5} {status.get('jobsSucceeded', 0):<10} {status.get('jobsFailed', 0)}"
    )


async def demo(env: TestEnvironment, oneshot: bool) -> None:
    assert env.kube is not None
    assert env.livekit is not None
    livekit = env.livekit
    async with await api_client(env.kube.kubeconfig) as k8s:
        core = client.CoreV1Api(k8s)
        await install_crd(k8s)
        ns = "demo"
        await create_namespace(core, ns, {"pod-security.kubernetes.io/enforce": "restricted"})
        await create_credentials(core, ns, livekit, name="livekit-credentials")
        op = OperatorProcess(env.kube.kubeconfig, [ns], env.workdir / "logs" / "operator.log")
        op.start()
        try:
            await op.wait_ready()
            print(f"operator running (log: {op.log_path})")
            deployments = Deployments(k8s, ns)
            body = agent_deployment(
                "voice-demo",
                livekit,
                f"{AGENTS}:beacon_forever",
                agent_name="voice-demo",
                secret_name="livekit-credentials",
                warmPool={"size": 1},
            )
            await deployments.create(body)
            await deployments.wait_condition("voice-demo", "Ready", "True", timeout=90)

            async def pool_ready() -> bool:
                status = (await deployments.get("voice-demo")).get("status") or {}
                return status.get("idlePods") == 1

            await eventually(pool_ready, 90, "one idle pod in the warm pool")
            print("\nAgentDeployment voice-demo is registered with LiveKit; one idle runner pod waits:")
            show_status(await deployments.get("voice-demo"))

            room = f"demo-{uuid.uuid4().hex[:4]}"
            async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
                await lk.room.create_room(api.CreateRoomRequest(name=room))
                t0 = time.monotonic()
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name="voice-demo", room=room)
                )
                agent = await wait_participant(lk, room, "agent-")
                print(
                    f"\ndispatched to room {room}: agent {agent.identity} joined in "
                    f"{time.monotonic() - t0:.2f}s (warm pool)"
                )
                for pod in await deployments.pods("voice-demo"):
                    labels = pod.metadata.labels
                    print(
                        f"  pod {pod.metadata.name}: {labels.get('agentoperator.dev/state')} "
                        f"job={labels.get('agentoperator.dev/job-id', '-')} phase={pod.status.phase}"
                    )
                await asyncio.sleep(2)
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))

                async def done() -> bool:
                    status = (await deployments.get("voice-demo")).get("status") or {}
                    return status.get("jobsSucceeded") == 1

                await eventually(done, 60, "the job to end")
            print(f"\nroom {room} deleted: the job ended and its pod went away; the pool refills:")
            show_status(await deployments.get("voice-demo"))
            print("\nEvents:")
            for event in sorted(
                await deployments.events("voice-demo"), key=lambda e: e.metadata.creation_timestamp
            ):
                print(f"  {event.type:<8} {event.reason:<18} {event.message}")
            print(f"\nMetrics (http://127.0.0.1:{op.metrics_port}/metrics), this deployment's job lines:")
            for line in (await op.metrics()).splitlines():
                if (
                    line.startswith(METRICS_SHOWN)
                    and 'deployment="voice-demo"' in line
                    and "_created{" not in line
                    and not line.endswith(" 0.0")
                ):
                    print(f"  {line}")
            if not oneshot:
                print(f"\nKUBECONFIG={env.kube.kubeconfig}")
                print(
                    f"LIVEKIT_URL={livekit.url} (api key {livekit.api_key}; secret in {env.workdir}/livekit)"
                )
                print("everything keeps running; Ctrl-C to stop", flush=True)
                await asyncio.Event().wait()
        finally:
            op.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--oneshot", action="store_true", help="stop after showing one job")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agent-operator-demo-"))
    env = TestEnvironment(workdir)
    t0 = time.monotonic()
    env.start()
    environments.import_node_images(env)  # the test agent image its job pods run
    print(f"local environment up in {time.monotonic() - t0:.1f}s (logs: {workdir})")
    try:
        asyncio.run(demo(env, args.oneshot))
    except KeyboardInterrupt:
        pass
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
