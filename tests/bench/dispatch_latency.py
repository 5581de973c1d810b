"""Dispatch -> agent ACTIVE in the room: the operator's paths against livekit-agents' own worker.

    devenv/netns-run .venv/bin/python -m tests.bench.dispatch_latency [--n 30] [--variants abcde]
    devenv/netns-run .venv/bin/python -m tests.bench.dispatch_latency

One livekit-server, one run, the cases interleaved:
  a. the operator, warm pool, native runtime (``tests.agents.stream_agents:idle``);
  b. the operator, cold path (no pool), native runtime: a pod created per job (on the process
     kubelet a local process; on the real node a container, so scheduling, the sandbox, CNI
     and the container start are in it);
  c. livekit-agents' own worker: ``python tests/agents/lka_bench.py start`` with its
     prewarmed idle processes at the framework's default count (ceil(CPU count));
  d. the operator, warm pool, ``runtime: livekit-agents``: the same module
     (``tests.agents.lka_bench:server``), its pool pods prewarmed;
  e. as c, but with as many idle processes as d's pool has pods (``--pool``; not the
     framework's default): 4 calls at once each find a prewarmed process, as on d. Its worker
     runs beside c's, so its health server takes a free port (c's holds the default 8081).
c, d and e run the same agent code (issue 13); a is the native agent's warm path against c.

Each case makes N dispatches one at a time, then N in batches of 4 at once. A round is one
batch of every case, the cases rotated each round, a pause between batches. Before every batch
each warm case waits for its pool to be full again and c for its idle processes to be back, so
each dispatch is a hit and no case runs while the refill of another's last batch (pods starting,
processes spawning) takes the CPU. Measured from outside: ``create_dispatch`` -> the agent participant ACTIVE
(``ListParticipants`` every 10 ms); then the room is deleted. A dispatch that fails is counted
and named, never given a number. From the operator's log: pod created -> runner attached on
the cold path, and per dispatch where its time went (``dispatch_stages``). Results also go to
``.test-logs/bench-dispatch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from livekit import api
from livekit.protocol import models

from devenv.environment import REPO_ROOT
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.bench.dispatch_stages import lka_marks, operator_marks, print_stages, stages
from tests.bench.figures import Series, header, load_average, machine, pct, row, write_json
from tests.bench.operator_env import OperatorBench, environment, log_lines, node_kind, operator_in
from tests.support.operator import AGENTS, Deployments, OperatorProcess, agent_deployment

POLL = 0.01
LKA_AGENT = REPO_ROOT / "tests" / "agents" / "lka_bench.py"
LABELS = {
    "a": "a. operator, warm pool (native)",
    "b": "b. operator, cold path (native)",
    "c": "c. livekit-agents worker, prewarmed",
    "d": "d. operator, warm pool (livekit-agents)",
    "e": "e. livekit-agents worker, --pool prewarmed",
}


@dataclass
class Case:
    key: str
    agent_name: str
    settle: Callable[[], Awaitable[None]]
    series: dict[int, Series] = field(default_factory=dict)
    # every measured dispatch: (concurrency, room, wall-clock dispatch time, seconds to ACTIVE)
    calls: list[tuple[int, str, float, float]] = field(default_factory=list)


async def one_dispatch(
    lk: api.LiveKitAPI, agent_name: str, timeout: float = 90, rooms: list[tuple[str, float]] | None = None
) -> float:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=60))
    try:
        t0 = time.monotonic()
        if rooms is not None:
            rooms.append((room, time.time()))
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
        while time.monotonic() < t0 + timeout:
            resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            if any(
                p.state == models.ParticipantInfo.ACTIVE and p.kind == models.ParticipantInfo.AGENT
                for p in resp.participants
            ):
                return time.monotonic() - t0
            await asyncio.sleep(POLL)
        raise TimeoutError(f"no agent ACTIVE in {room} within {timeout:.0f}s")
    finally:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def batch(lk: api.LiveKitAPI, cases: list[Case], case: Case, size: int, concurrency: int) -> None:
    """One batch of ``case``, once every case is settled: the pods or processes the previous
    batch (of any case) used up are replaced first, so no case is measured while another's
    refill (pod starts, process spawns) takes the CPU."""
    series = case.series[concurrency]
    try:
        for each in cases:
            await each.settle()
        series.sample_load()
    except Exception as exc:
        for _ in range(size):
            series.fail(f"not settled before the batch: {type(exc).__name__}: {exc}")
        return
    rooms: list[list[tuple[str, float]]] = [[] for _ in range(size)]
    results = await asyncio.gather(
        *(one_dispatch(lk, case.agent_name, rooms=rooms[i]) for i in range(size)), return_exceptions=True
    )
    for result, room in zip(results, rooms, strict=True):
        if isinstance(result, BaseException):
            series.fail(f"{type(result).__name__}: {result}")
        else:
            series.add(result)
            case.calls.append((concurrency, room[0][0], room[0][1], result))


async def interleaved(lk: api.LiveKitAPI, cases: list[Case], n: int, concurrency: int, gap: float) -> None:
    for case in cases:
        case.series[concurrency] = Series()
    rounds = math.ceil(n / concurrency)
    for r in range(rounds):
        size = min(concurrency, n - r * concurrency)
        for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
            await batch(lk, cases, case, size, concurrency)
            await asyncio.sleep(gap)
        done = ", ".join(f"{c.key}: {len(c.series[concurrency].values)}" for c in cases)
        print(
            f"  {concurrency} at a time, round {r + 1}/{rounds} ({done}; load {load_average():.1f})",
            flush=True,
        )


def pool_full(deployments: Deployments, name: str, size: int) -> Callable[[], Awaitable[None]]:
    async def settle() -> None:
        async def full() -> bool:
            status = (await deployments.get(name)).get("status") or {}
            return int(status.get("idlePods", 0)) >= size

        await eventually(full, 180, f"{name}: {size} idle pods")

    return settle


async def no_wait() -> None:
    return None


class LkaWorker:
    """``python tests/agents/lka_bench.py start``: livekit-agents' own worker, its defaults."""

    def __init__(
        self, livekit: LiveKitAccess, log_path: Path, agent_name: str, idle: int | None = None
    ) -> None:
        self.livekit = livekit
        self.log_path = log_path
        self.agent_name = agent_name
        self.idle = idle  # None: the framework's default
        self.proc: asyncio.subprocess.Process | None = None
        from livekit.agents.utils.hw import get_cpu_monitor

        # AgentServer's own default for num_idle_processes (prod mode)
        self.idle_target = math.ceil(get_cpu_monitor().cpu_count()) if idle is None else idle

    def count(self, message: bytes) -> int:
        return self.log_path.read_bytes().count(message)

    async def start(self) -> None:
        env = dict(
            os.environ,
            LIVEKIT_URL=self.livekit.url,
            LIVEKIT_API_KEY=self.livekit.api_key,
            LIVEKIT_API_SECRET=self.livekit.api_secret,
            AGENT_NAME=self.agent_name,
        )
        if self.idle is not None:
            env["LKA_BENCH_IDLE_PROCESSES"] = str(self.idle)
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(LKA_AGENT), "start", env=env, cwd=self.log_path.parent,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

        async def registered() -> bool:
            assert self.proc is not None
            assert self.proc.returncode is None, self.log_path.read_text()[-3000:]
            return b"registered worker" in self.log_path.read_bytes()

        await eventually(registered, 120, "the livekit-agents worker registered")
        await self.settle()

    async def settle(self) -> None:
        """Its idle processes back to their target: one new process per job it received (a
        dispatch LiveKit never gave it takes none)."""

        async def back() -> bool:
            return self.count(b"process initialized") >= self.idle_target + self.count(
                b"received job request"
            )

        await eventually(back, 120, "livekit-agents: its idle processes back")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def attach_times(operator: OperatorProcess) -> list[float]:
    """Cold path, from the operator's log: the job's pod created -> its runner attached."""
    created: dict[str, datetime] = {}
    out: list[float] = []
    for record in log_lines(operator):
        pod, at = str(record.get("pod")), datetime.fromisoformat(record["ts"])
        if record.get("msg") == "job assigned; pod created (cold path)":
            created[pod] = at
        elif str(record.get("msg", "")).startswith("runner attached") and pod in created:
            out.append((at - created.pop(pod)).total_seconds())
    return out


async def measure(bench: OperatorBench, args: argparse.Namespace, out: dict[str, Any]) -> None:
    livekit, deployments = bench.livekit, bench.deployments
    specs = {
        "a": agent_deployment(
            "warm", livekit, f"{AGENTS}:idle", maxConcurrentJobs=16, warmPool={"size": args.pool}
        ),
        "b": agent_deployment("cold", livekit, f"{AGENTS}:idle", maxConcurrentJobs=16),
        "d": agent_deployment(
            "lka-warm", livekit, "tests.agents.lka_bench:server", runtime="livekit-agents",
            maxConcurrentJobs=16, warmPool={"size": args.pool},
        ),
    }  # fmt: skip
    for body in specs.values():  # the runner at its default log level, as the peer's worker is
        container = body["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] != "AGENT_LOG_LEVEL"]
    cases: list[Case] = []
    for key in sorted(set(args.variants) & set(specs)):
        body = await deployments.create(specs[key])
        name = body["metadata"]["name"]
        await deployments.wait_condition(name, "Ready", "True", timeout=120)
        settle = pool_full(deployments, name, args.pool) if key in "ad" else no_wait
        cases.append(Case(key, body["spec"]["agentName"], settle))
    workers: dict[str, LkaWorker] = {}
    for key, idle in (("c", None), ("e", args.pool)):
        if key in args.variants:
            log_path = bench.env.workdir / "logs" / f"lka-worker-{key}.log"
            worker = LkaWorker(livekit, log_path, f"lka-{key}-{uuid.uuid4().hex[:4]}", idle)
            await worker.start()
            workers[key] = worker
            out[f"lka_idle_processes_{key}"] = worker.idle_target
            cases.append(Case(key, worker.agent_name, worker.settle))
    cases.sort(key=lambda c: c.key)
    try:
        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            for case in cases:  # warm-up, discarded: it also proves each is registered
                await case.settle()
                await one_dispatch(lk, case.agent_name, 180)
            for concurrency in (1, 4):
                print(f"{args.n} dispatches per case, {concurrency} at a time", flush=True)
                await interleaved(lk, cases, args.n, concurrency, args.gap)
    finally:
        for worker in workers.values():
            await worker.stop()
    records = log_lines(bench.operator)
    for case in cases:
        for concurrency, series in case.series.items():
            out["dispatch"][f"{LABELS[case.key]} (concurrency {concurrency})"] = series.summary()
        marks = lka_marks(workers[case.key].log_path) if case.key in workers else operator_marks(records)
        out["stages"][LABELS[case.key]] = stages(case.calls, marks)
    if "b" in args.variants:
        attached = attach_times(bench.operator)
        out["cold_pod_created_to_attached"] = (
            {"n": len(attached), **{f"p{q}_ms": round(pct(attached, q / 100) * 1000) for q in (50, 95)}}
            if attached
            else {"n": 0}
        )
    metrics = await bench.operator.metrics()
    out["placements"] = [
        m for m in metrics.splitlines() if m.startswith("agent_operator_job_placements_total{")
    ]


def print_table(out: dict[str, Any]) -> None:
    print(f"\nDispatch -> agent ACTIVE ({out['machine']}, {out['node']}, {out['date']}; N={out['n']} a row)")
    print(f"load average at the start {out['load_start']:.1f}, at the end {out['load_end']:.1f}")
    if "lka_idle_processes_c" in out:
        print(f"livekit-agents' idle processes (its default here): {out['lka_idle_processes_c']}")
    if "lka_idle_processes_e" in out:
        print(f"e's idle processes (set, as d's pool): {out['lka_idle_processes_e']}")
    print(header(58))
    rows = out["dispatch"]
    for key, summary in rows.items():
        line = row(key, summary, 58)
        for against in "ce" if key[0] == "d" else "c" if key[0] == "a" else "":
            peer = rows.get(f"{LABELS[against]} {key[key.index('(concurrency') :]}")
            if peer and peer.get("n") and summary.get("n"):
                p50, p99 = summary["p50_ms"] / peer["p50_ms"], summary["p99_ms"] / peer["p99_ms"]
                line += f"  x{p50:.2f} p50, x{p99:.2f} p99 vs {against}"
        print(line)
    for key, summary in rows.items():
        for failure in summary.get("first_failures", []):
            print(f"  {key}: {failure}")
    print("where the time goes (from the serving side's log):")
    for label, table in out.get("stages", {}).items():
        print_stages(label, table)
    cold = out.get("cold_pod_created_to_attached")
    if cold:
        print(f"cold path, pod created -> runner attached (operator log): {cold}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=30, help="dispatches per case and concurrency")
    parser.add_argument("--variants", default="abcde", help="which of a, b, c, d, e to measure")
    parser.add_argument("--pool", type=int, default=4, help="warm pool size of a and d")
    parser.add_argument("--gap", type=float, default=1.0, help="pause between batches, s")
    parser.add_argument("--json", default="bench-dispatch", help="results as .test-logs/<this>.json")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "n": args.n,
        "pool": args.pool,
        "load_start": load_average(),
        "dispatch": {},
        "stages": {},
    }
    with environment("bench-dispatch-") as env:
        out["node"] = node_kind(env)

        async def run() -> None:
            async with operator_in(env, "bench-operator.log") as bench:
                await measure(bench, args, out)

        asyncio.run(run())
    out["load_end"] = load_average()
    print_table(out)
    write_json(args.json, out)
    return 1 if any(r["failures"] for r in out["dispatch"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
