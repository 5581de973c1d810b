"""Dead-runner detection: SIGSTOP of a runner in a call -> its pod deleted by the operator.

    devenv/netns-run .venv/bin/python -m tests.bench.dead_runner [--short 5] [--default 2]

At a short heartbeat (ping 0.5 s, timeout 5 s) and at the default one (ping 2.5 s, timeout
60 s), each sample: a dispatched job's runner is stopped a few pongs into its call, and the
time until its pod is gone is measured. On the real node the signal goes to the container's
main process (its host PID from containerd).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
import uuid
from typing import Any

from livekit import api

from tests.bench.figures import load_average, machine
from tests.bench.operator_env import OperatorBench, environment, node_kind, operator_in
from tests.support.operator import AGENTS, agent_deployment, job_pod, pid

CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("short (ping 0.5s, timeout 5s)", {"pingInterval": "500ms", "pingTimeout": "5s"}),
    ("default (ping 2.5s, timeout 60s)", {}),
)


async def detection(bench: OperatorBench, heartbeat: dict[str, str], samples: int) -> list[float]:
    deployments, livekit = bench.deployments, bench.livekit
    name = f"det-{uuid.uuid4().hex[:4]}"
    spec: dict[str, Any] = {"heartbeat": heartbeat} if heartbeat else {}
    body = await deployments.create(agent_deployment(name, livekit, f"{AGENTS}:idle", **spec))
    await deployments.wait_condition(name, "Ready", "True", timeout=120)
    values: list[float] = []
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        for _ in range(samples):
            room = f"det-{uuid.uuid4().hex[:6]}"
            await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=body["spec"]["agentName"], room=room)
            )
            pod = await job_pod(deployments, name, 120)
            runner = await pid(deployments, pod)
            await asyncio.sleep(3)  # a few pongs in
            t0 = time.monotonic()
            os.kill(runner, signal.SIGSTOP)
            while pod.metadata.uid in {p.metadata.uid for p in await deployments.pods(name)}:
                if time.monotonic() - t0 > 180:
                    raise TimeoutError("pod not deleted within 180s")
                await asyncio.sleep(0.05)
            values.append(time.monotonic() - t0)
            # during a long stop livekit-server may already have dropped the silent agent and
            # closed the empty room
            with contextlib.suppress(api.TwirpError):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            await asyncio.sleep(1)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", type=int, default=5, help="samples at the short heartbeat")
    parser.add_argument("--default", type=int, default=2, help="samples at the default heartbeat")
    args = parser.parse_args()
    failed = False
    with environment("bench-detect-") as env:
        print(f"{machine()}, {node_kind(env)}, load average {load_average():.1f}")

        async def run() -> None:
            nonlocal failed
            async with operator_in(env, "bench-operator.log") as bench:
                for (label, heartbeat), samples in zip(CASES, (args.short, args.default), strict=True):
                    if samples <= 0:
                        continue
                    try:
                        values = await detection(bench, heartbeat, samples)
                    except Exception as exc:
                        failed = True
                        print(f"detection {label}: FAILED: {type(exc).__name__}: {exc}", flush=True)
                        continue
                    shown = [round(v, 2) for v in values]
                    print(
                        f"detection {label}: SIGSTOP -> pod deleted {shown} s (max {max(values):.2f} s; "
                        f"load {load_average():.1f})",
                        flush=True,
                    )

        asyncio.run(run())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
