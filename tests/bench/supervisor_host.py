"""Runs the operator's Supervisor alone in a process, for the capacity benchmark.

The real supervisor with the real TokenReview authenticator and pod terminator; pods to
expect are read from a JSON file. Serves its Prometheus metrics on --metrics-port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from prometheus_client import start_http_server

from agent_operator.kube.pods import PodTerminator
from agent_operator.kube.tokenreview import TokenReviewAuthenticator
from agent_operator.logs import setup_logging
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from devenv.kubeclient import api_client


async def amain(args: argparse.Namespace, pods: list[dict[str, str]]) -> None:
    api = await api_client(Path(args.kubeconfig))
    async with api:
        sup = Supervisor(TokenReviewAuthenticator(api), PodTerminator(api))
        heartbeat = HeartbeatSettings()
        for item in pods:
            pod = PodIdentity(item["namespace"], item["name"], item["uid"])
            sup.expect(RunnerBinding(pod, DeploymentRef(pod.namespace, "bench"), heartbeat))
        port = await sup.start(f"127.0.0.1:{args.port}")
        start_http_server(args.metrics_port, addr="127.0.0.1")
        print(f"READY {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sup.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--pods", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    setup_logging("WARNING")
    logging.getLogger("agent_operator").setLevel(logging.WARNING)
    asyncio.run(amain(args, json.loads(Path(args.pods).read_text())))


if __name__ == "__main__":
    main()
