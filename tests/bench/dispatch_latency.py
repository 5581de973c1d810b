"""Dispatch latency and dead-runner detection, on the real local environment.

    devenv/netns-run python -m tests.bench.dispatch_latency [--n 50] [--lka-python PATH]

One livekit-server, one machine, one run. For each of
  a. this operator, warm pool path (idle pods attached and waiting);
  b. this operator, cold path (pool size 0; a pod is created per job: a container of the
     test agent image on the real node, the image already imported, so no pull);
  c. livekit-agents (from PyPI, in its own venv) with its prewarmed process pool;
it makes N explicit dispatches sequentially and N with 4 at a time, and measures
``create_dispatch`` -> the agent participant ACTIVE in the room, observed from outside the
operator (RoomService.ListParticipants polled every 10 ms). Then it measures the time from
SIGSTOP of a runner to its pod deleted, at short and at default heartbeat timeouts.
A case that fails prints its failure and no number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from livekit import api
from livekit.protocol import models

from devenv.environment import REPO_ROOT, TestEnvironment
from devenv.kubeclient import api_client, create_namespace, eventually
from devenv.livekit import LiveKitAccess
from tests.support import environments
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    install_crd,
    job_pod,
    pid,
)

POLL = 0.01


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 0.5) * 1000, 1),
        "p95_ms": round(pct(values, 0.95) * 1000, 1),
        "p99_ms": round(pct(values, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


async def one_dispatch(lk: api.LiveKitAPI, agent_name: str) -> float:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
    t0 = time.monotonic()
    await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=agent_name, room=room))
    deadline = t0 + 60
    while time.monotonic() < deadline:
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        if any(
            p.state == models.ParticipantInfo.ACTIVE and p.kind == models.ParticipantInfo.AGENT
            for p in resp.participants
        ):
            elapsed = time.monotonic() - t0
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            return elapsed
        await asyncio.sleep(POLL)
    raise TimeoutError(f"no agent joined {room} within 60s")


async def run_series(
    lk: api.LiveKitAPI, agent_name: str, n: int, concurrency: int, settle: Callable[[], Awaitable[None]]
) -> list[float]:
    results: list[float] = []

    async def lane(count: int) -> None:
        for _ in range(count):
            await settle()
            results.append(await one_dispatch(lk, agent_name))

    per_lane = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(lane(c) for c in per_lane))
    return results


async def measure_dispatch(env: TestEnvironment, args: argparse.Namespace, out: dict[str, Any]) -> None:
    assert env.kube is not None
    assert env.livekit is not None
    livekit: LiveKitAccess = env.livekit
    async with await api_client(env.kube.kubeconfig) as k8s:
        await install_crd(k8s)
        core = client.CoreV1Api(k8s)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        await create_namespace(core, ns)
        await create_credentials(core, ns, livekit)
        deployments = Deployments(k8s, ns)
        op = OperatorProcess(env.kube.kubeconfig, [ns], env.workdir / "logs" / "bench-operator.log")
        op.start()
        try:
            await op.wait_ready()
            variants: dict[str, tuple[str, Callable[[], Awaitable[None]]]] = {}
            warm = await deployments.create(
                agent_deployment(
                    "warm", livekit, f"{AGENTS}:idle", maxConcurrentJobs=16, warmPool={"size": 4}
                )
            )
            cold = await deployments.create(
                agent_deployment("cold", livekit, f"{AGENTS}:idle", maxConcurrentJobs=16)
            )
            for name in ("warm", "cold"):
                await deployments.wait_condition(name, "Ready", "True", timeout=90)

            async def pool_full() -> None:
                # the warm path is a pool hit: dispatch when the pool is full again. The refill itself
                # (a new Python process per pod) competes for this machine's 2 cores, which a
                # cluster's other nodes would not.
                async def full() -> bool:
                    status = (await deployments.get("warm")).get("status") or {}
                    return int(status.get("idlePods", 0)) >= 4

                await eventually(full, 60, "a full warm pool")

            async def no_wait() -> None:
                return None

            if "a" in args.variants:
                variants["a. operator, warm pool"] = (warm["spec"]["agentName"], pool_full)
            if "b" in args.variants:
                variants["b. operator, cold path"] = (cold["spec"]["agentName"], no_wait)
            lka_proc = None
            if args.lka_python and "c" in args.variants:
                lka_name = f"lka-{uuid.uuid4().hex[:4]}"
                lka_env = dict(
                    os.environ,
                    LIVEKIT_URL=livekit.url,
                    LIVEKIT_API_KEY=livekit.api_key,
                    LIVEKIT_API_SECRET=livekit.api_secret,
                    BENCH_AGENT_NAME=lka_name,
                    BENCH_IDLE_PROCESSES="4",
                )
                lka_log = env.workdir / "logs" / "lka-worker.log"
                with lka_log.open("ab") as log_file:
                    lka_proc = await asyncio.create_subprocess_exec(
                        args.lka_python,
                        str(REPO_ROOT / "tests" / "bench" / "lka_worker.py"),
                        "start",
                        env=lka_env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                await asyncio.sleep(8)  # registered and its idle processes prewarmed
                variants["c. livekit-agents, prewarmed"] = (lka_name, no_wait)
            try:
                async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
                    for label, (agent_name, settle) in variants.items():
                        # warm-up, discarded: the first dispatches also prove the worker is registered
                        for _ in range(2):
                            await settle()
                            await one_dispatch(lk, agent_name)
                        for concurrency in (1, 4):
                            key = f"{label} (concurrency {concurrency})"
                            try:
                                values = await run_series(lk, agent_name, args.n, concurrency, settle)
                                out["dispatch"][key] = summary(values)
                            except Exception as exc:
                                out["dispatch"][key] = {"error": f"{type(exc).__name__}: {exc}"}
                            print(key, json.dumps(out["dispatch"][key]), flush=True)
                            await asyncio.sleep(3)
                metrics = await op.metrics()
                out["placements"] = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("agent_operator_job_placements_total{")
                ]
            finally:
                if lka_proc is not None:
                    lka_proc.terminate()
                    try:
                        await asyncio.wait_for(lka_proc.wait(), 20)
                    except TimeoutError:
                        lka_proc.kill()
                        await lka_proc.wait()

            # dead runner detection
            for label, heartbeat, samples in (
                (
                    "short (ping 0.5s, timeout 5s)",
                    {"pingInterval": "500ms", "pingTimeout": "5s"},
                    args.detect_short,
                ),
                ("default (ping 2.5s, timeout 60s)", {}, args.detect_default),
            ):
                key = f"detection {label}"
                if samples <= 0:
                    continue
                try:
                    values = await measure_detection(deployments, livekit, heartbeat, samples)
                    out["detection"][key] = {
                        "n": len(values),
                        "values_s": [round(v, 2) for v in values],
                        "max_s": round(max(values), 2),
                    }
                except Exception as exc:
                    out["detection"][key] = {"error": f"{type(exc).__name__}: {exc}"}
                print(key, json.dumps(out["detection"][key]), flush=True)
        finally:
            op.stop()


async def measure_detection(
    deployments: Deployments, livekit: LiveKitAccess, heartbeat: dict[str, str], samples: int
) -> list[float]:
    name = f"det-{uuid.uuid4().hex[:4]}"
    spec: dict[str, Any] = {"heartbeat": heartbeat} if heartbeat else {}
    body = await deployments.create(agent_deployment(name, livekit, f"{AGENTS}:idle", **spec))
    await deployments.wait_condition(name, "Ready", "True", timeout=90)
    values: list[float] = []
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        for _ in range(samples):
            room = f"det-{uuid.uuid4().hex[:6]}"
            await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=body["spec"]["agentName"], room=room)
            )
            pod = await job_pod(deployments, name)
            runner = await pid(deployments, pod)
            await asyncio.sleep(3)  # a few pongs in
            t0 = time.monotonic()
            os.kill(runner, signal.SIGSTOP)
            while True:
                pods = {p.metadata.uid for p in await deployments.pods(name)}
                if pod.metadata.uid not in pods:
                    break
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


def print_table(out: dict[str, Any]) -> None:
    print(f"\nDispatch -> agent joined ({out['machine']}, {out['date']}; N={out['n']} per row)")
    print(f"{'case':<52} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    ref: dict[int, dict[str, Any] | None] = {1: None, 4: None}
    for key, row in out["dispatch"].items():
        if key.startswith("c.") and "error" not in row:
            ref[4 if "concurrency 4" in key else 1] = row
    for key, row in out["dispatch"].items():
        if "error" in row:
            print(f"{key:<52} FAILED: {row['error']}")
            continue
        base = ref[4 if "concurrency 4" in key else 1]
        ratio = ""
        if base and not key.startswith("c."):
            p50 = row["p50_ms"] / base["p50_ms"]
            p99 = row["p99_ms"] / base["p99_ms"]
            ratio = f"  (x{p50:.2f} p50, x{p99:.2f} p99 vs c)"
        print(f"{key:<52} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8}{ratio}")
    print("(b includes the container start; the image is already on the node: no pull)")
    for key, row in out["detection"].items():
        if "error" in row:
            print(f"{key}: FAILED: {row['error']}")
        else:
            print(f"{key}: SIGSTOP -> pod deleted {row['values_s']} s (max {row['max_s']} s)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--lka-python", default=None, help="python of a venv with livekit-agents installed")
    parser.add_argument("--variants", default="abc", help="which of a, b, c to measure (default abc)")
    parser.add_argument("--detect-short", type=int, default=5)
    parser.add_argument("--detect-default", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO_ROOT / ".test-logs" / "bench-dispatch.json")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "n": args.n,
        "dispatch": {},
        "detection": {},
    }
    env = TestEnvironment(Path(tempfile.mkdtemp(prefix="bench-dispatch-")))
    env.start()
    environments.import_node_images(env)  # the test agent image its job pods run
    try:
        asyncio.run(measure_dispatch(env, args, out))
    finally:
        env.stop()
    print_table(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"written {args.json}")
    failed = any("error" in r for r in [*out["dispatch"].values(), *out["detection"].values()])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
