"""Failover: a running job's runner SIGKILLed -> the agent ACTIVE again in the same room.

    devenv/netns-run .venv/bin/python -m tests.bench.failover_latency [--n 20] [--variants wc]

One operator, one livekit-server, the real node; two AgentDeployments of the native test agent
(``tests.agents.stream_agents:idle``) with failover on, interleaved round by round:
  w. a warm pool (the job restarts on an idle pod that is already attached);
  c. no pool (the cold path: a pod is created for the restart).
Each round dispatches a job, waits for its agent ACTIVE and (w) for the pool to be full, kills
the runner's process through containerd (SIGKILL, as a crash or the OOM killer does), and times
until a participant of the same identity with a new session is ACTIVE in the room
(``ListParticipants`` every 10 ms); then the room is deleted. A failover that does not come back
within 60 s is counted as a failure. From the operator's log: where the time went (the death
noticed and the restart begun, the job placed, the runner has it). Results also go to
``.test-logs/bench-failover.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
import uuid
from datetime import datetime
from typing import Any

from livekit import api
from livekit.protocol import models

from devenv.kubeclient import eventually
from tests.bench.figures import Series, header, load_average, machine, pct, row, write_json
from tests.bench.operator_env import OperatorBench, environment, log_lines, node_kind, operator_in
from tests.support.operator import AGENTS, Deployments, agent_deployment, dispatch, pid

POLL = 0.01
LABELS = {"w": "w. warm pool", "c": "c. cold path (no pool)"}
FAILOVER = {"enabled": True, "maxRestarts": 1, "window": "10m"}


async def active(
    lk: api.LiveKitAPI, room: str, old_sid: str = "", timeout: float = 60
) -> models.ParticipantInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        for p in resp.participants:
            agent = p.kind == models.ParticipantInfo.AGENT and p.state == models.ParticipantInfo.ACTIVE
            if agent and p.sid != old_sid:
                return p
        await asyncio.sleep(POLL)
    raise TimeoutError(f"no (new) agent ACTIVE in {room} within {timeout:.0f}s")


async def job_pod(deployments: Deployments, name: str, job_id: str = "") -> Any:
    async def find() -> Any:
        for pod in await deployments.pods(name):
            labels = pod.metadata.labels or {}
            job = labels.get("agentoperator.dev/job-id", "")
            running = pod.status.phase == "Running" and not pod.metadata.deletion_timestamp
            if job and running and (not job_id or job == job_id):
                return pod
        return None

    return await eventually(find, 90, f"the job pod of {name}")


async def pool_full(deployments: Deployments, name: str, size: int) -> None:
    async def full() -> bool:
        return int(((await deployments.get(name)).get("status") or {}).get("idlePods", 0)) >= size

    await eventually(full, 180, f"{name}: {size} idle pods")


async def one_failover(
    lk: api.LiveKitAPI, bench: OperatorBench, name: str, agent_name: str, pool: int
) -> tuple[str, float, float]:
    """(room, wall-clock kill time, seconds to the agent ACTIVE again)."""
    room = f"fo-{uuid.uuid4().hex[:8]}"
    await dispatch(lk, agent_name, room, empty_timeout=120)
    try:
        first = await active(lk, room, timeout=90)
        pod = await job_pod(bench.deployments, name)
        if pool:
            await pool_full(bench.deployments, name, pool)
        await asyncio.sleep(0.5)  # the job settled in (its start reported)
        process = await pid(bench.deployments, pod)
        killed_at, t0 = time.time(), time.monotonic()
        os.kill(process, signal.SIGKILL)
        await active(lk, room, old_sid=first.sid)
        return room, killed_at, time.monotonic() - t0
    finally:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


def restart_stages(records: list[dict[str, Any]], kills: list[tuple[str, float, float]]) -> dict[str, Any]:
    """kill -> restart begun (the death noticed) -> placed -> runner has the job -> ACTIVE."""
    spans: dict[str, list[float]] = {}
    for room, killed_at, elapsed in kills:
        mine = [r for r in records if r.get("room") == room and "ts" in r]
        begun = next((r for r in mine if str(r.get("msg", "")).startswith("the job's pod died")), None)
        if begun is None:
            continue
        t_begun = datetime.fromisoformat(begun["ts"]).timestamp()
        after = [r for r in mine if datetime.fromisoformat(r["ts"]).timestamp() >= t_begun]
        placed = next((r for r in after if str(r.get("msg", "")).startswith("job assigned")), None)
        runner = next((r for r in after if " received for room " in str(r.get("msg", ""))), None)
        points = [("kill", killed_at), ("restart begun", t_begun)]
        if placed is not None:
            points.append(("placed", datetime.fromisoformat(placed["ts"]).timestamp()))
        if runner is not None and runner.get("runner_ts_us"):
            points.append(("runner has the job", int(runner["runner_ts_us"]) / 1e6))
        points.append(("active", killed_at + elapsed))
        for (a, ta), (b, tb) in itertools.pairwise(points):
            spans.setdefault(f"{a} -> {b}", []).append(tb - ta)
    return {
        k: {"n": len(v), "p50_ms": round(pct(v, 0.5) * 1000, 1), "p95_ms": round(pct(v, 0.95) * 1000, 1)}
        for k, v in spans.items()
    }


async def measure(bench: OperatorBench, args: argparse.Namespace, out: dict[str, Any]) -> None:
    cases: list[tuple[str, str, str, int]] = []  # key, deployment, agent name, pool size
    for key in args.variants:
        pool = args.pool if key == "w" else 0
        body = agent_deployment(
            f"fo-{key}", bench.livekit, f"{AGENTS}:idle", failover=FAILOVER, maxConcurrentJobs=8,
            warmPool={"size": pool},
        )  # fmt: skip
        created = await bench.deployments.create(body)
        await bench.deployments.wait_condition(f"fo-{key}", "Ready", "True", timeout=120)
        cases.append((key, f"fo-{key}", created["spec"]["agentName"], pool))
    series = {key: Series() for key, *_ in cases}
    kills: dict[str, list[tuple[str, float, float]]] = {key: [] for key, *_ in cases}
    async with api.LiveKitAPI(bench.livekit.http_url, bench.livekit.api_key, bench.livekit.api_secret) as lk:
        for _, name, agent_name, pool in cases:  # warm-up, discarded
            await one_failover(lk, bench, name, agent_name, pool)
        for r in range(args.n):
            for key, name, agent_name, pool in cases[r % len(cases) :] + cases[: r % len(cases)]:
                series[key].sample_load()
                try:
                    room, killed_at, elapsed = await one_failover(lk, bench, name, agent_name, pool)
                except Exception as exc:
                    series[key].fail(f"{type(exc).__name__}: {exc}")
                else:
                    series[key].add(elapsed)
                    kills[key].append((room, killed_at, elapsed))
                await asyncio.sleep(args.gap)
            done = ", ".join(f"{k}: {len(s.values)}" for k, s in series.items())
            print(f"  round {r + 1}/{args.n} ({done}; load {load_average():.1f})", flush=True)
    records = log_lines(bench.operator)
    for key, *_ in cases:
        out["failover"][LABELS[key]] = series[key].summary()
        out["stages"][LABELS[key]] = restart_stages(records, kills[key])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20, help="failovers per case")
    parser.add_argument("--variants", default="wc", help="which of w (warm pool), c (cold path)")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size of w")
    parser.add_argument("--gap", type=float, default=1.0, help="pause between failovers, s")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "n": args.n,
        "load_start": load_average(),
        "failover": {},
        "stages": {},
    }
    with environment("bench-failover-") as env:
        out["node"] = node_kind(env)

        async def run() -> None:
            async with operator_in(env, "bench-operator.log") as bench:
                await measure(bench, args, out)

        asyncio.run(run())
    out["load_end"] = load_average()
    print(f"\nRunner SIGKILLed -> agent ACTIVE again ({out['machine']}, {out['node']}, {out['date']})")
    print(header(30))
    for label, summary in out["failover"].items():
        print(row(label, summary, 30))
        for failure in summary.get("first_failures", []):
            print(f"  {failure}")
    for label, spans in out["stages"].items():
        print(f"  {label}:")
        for name, s in spans.items():
            print(f"    {name:<34} n={s['n']:<3} p50 {s['p50_ms']:>7.1f} ms  p95 {s['p95_ms']:>7.1f} ms")
    write_json("bench-failover", out)
    return 1 if any(s["failures"] for s in out["failover"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
