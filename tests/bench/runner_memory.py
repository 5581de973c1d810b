"""Memory of a runner container on the real node, idle in the warm pool and in a call, from
the container's own cgroup (``memory.stat``: what the kernel charges to it, page cache apart).

    devenv/netns-run .venv/bin/python -m tests.bench.runner_memory

Four agents of the test agent image, each a deployment with a warm pool of one:
- the native voice example (``agent_jobrunner.examples.voice``: Silero VAD, PocketSphinx,
  the rule LLM, espeak-ng), in a call after a caller's question is answered;
- the trivial native agent (``tests.agents.stream_agents:idle``), in a call with a caller;
- the trivial livekit-agents agent (``tests.agents.lka_bench:server``, ``runtime:
  livekit-agents``, prewarmed), in a call with a caller: the framework's own cost;
- the same with an inference runner registered (``tests.agents.lka_bench_inference:server``):
  the pod's own inference process, less any model (the turn detector's is not reachable here).
Each figure is read a few seconds after the state is reached. ``rss`` is the cgroup's
anonymous memory; pages of the image's files are charged to whichever container read them
first, so ``cache`` is small and ``usage`` is close to ``rss``. Real node only: on the process
kubelet a pod is no container and has no cgroup of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path
from typing import Any

from livekit import api

from devenv.caller import Caller
from devenv.node import CGROUP_FS
from devenv.speech import speak
from tests.bench.figures import load_average, machine
from tests.bench.operator_env import OperatorBench, environment, operator_in
from tests.support import environments
from tests.support.operator import AGENTS, agent_deployment, dispatch, status_equals

SETTLE = 5.0
NATIVE: dict[str, Any] = {}
LKA: dict[str, Any] = {"runtime": "livekit-agents"}
AGENT_CASES = (
    ("voice example", "agent_jobrunner.examples.voice:entrypoint", "What is the weather in Paris?", NATIVE),
    ("trivial agent", f"{AGENTS}:idle", "", NATIVE),
    ("livekit-agents runtime, trivial agent", "tests.agents.lka_bench:server", "", LKA),
    (
        "livekit-agents runtime, trivial agent + inference process",
        "tests.agents.lka_bench_inference:server",
        "",
        LKA,
    ),
)


def memory_cgroup(pid: int) -> Path:
    """The folder of the memory cgroup (v1) of the process ``pid``."""
    line = next(
        entry for entry in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in entry
    )
    return CGROUP_FS / "memory" / line.split(":", 2)[2].lstrip("/")


def processes(pid: int) -> list[str]:
    """Each process of ``pid``'s container: its pid, command and RSS / PSS (``smaps_rollup``), MB."""
    out = []
    for member in (memory_cgroup(pid) / "cgroup.procs").read_text().split():
        proc = Path("/proc") / member
        try:
            command = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            rollup = dict(
                (line.split()[0].rstrip(":"), int(line.split()[1]))
                for line in proc.joinpath("smaps_rollup").read_text().splitlines()[1:]
            )
        except OSError:  # gone meanwhile
            continue
        out.append(f"{member} {command[:60]!r}: {rollup['Rss'] / 1024:.1f} / {rollup['Pss'] / 1024:.1f}")
    return out


def container_memory(pid: int) -> dict[str, float]:
    """The memory cgroup of the process ``pid`` (cgroup v1): rss, cache and usage, in MB."""
    folder = memory_cgroup(pid)
    stat = dict(entry.split() for entry in (folder / "memory.stat").read_text().splitlines())
    mb = 1024 * 1024
    return {
        "rss_mb": round((int(stat["rss"]) + int(stat.get("rss_huge", 0))) / mb, 1),
        "cache_mb": round(int(stat["cache"]) / mb, 1),
        "usage_mb": round(int((folder / "memory.usage_in_bytes").read_text()) / mb, 1),
        "peak_mb": round(int((folder / "memory.max_usage_in_bytes").read_text()) / mb, 1),
    }


async def runner_pid(bench: OperatorBench, name: str, busy: bool) -> int:
    """The host PID of the deployment's one pod in that state (idle, or with a job)."""
    for _ in range(600):
        for pod in await bench.deployments.pods(name):
            has_job = bool(pod.metadata.labels.get("agentoperator.dev/job-id"))
            found = environments.runner_host_pid(pod) if has_job == busy else None
            if found is not None:
                return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no {'busy' if busy else 'idle'} pod of {name} with a running container")


async def one_agent(
    bench: OperatorBench, label: str, entrypoint: str, question: str, spec: dict[str, Any]
) -> dict[str, Any]:
    name = f"mem-{uuid.uuid4().hex[:4]}"
    body = await bench.deployments.create(
        agent_deployment(name, bench.livekit, entrypoint, warmPool={"size": 1}, **spec)
    )
    await bench.deployments.wait_condition(name, "Ready", "True", timeout=120)
    await status_equals(bench.deployments, name, "idlePods", 1, timeout=180)
    await asyncio.sleep(SETTLE)
    idle_pid = await runner_pid(bench, name, busy=False)
    out: dict[str, Any] = {"idle": container_memory(idle_pid)}
    print(f"{label}, idle in the pool: {out['idle']} (load {load_average():.1f})", flush=True)
    for line in processes(idle_pid):
        print(f"  process {line} (RSS / PSS MB)", flush=True)
    room = f"mem-{uuid.uuid4().hex[:6]}"
    caller = Caller()
    livekit = bench.livekit
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        try:
            await caller.join(livekit, room)
            await dispatch(lk, body["spec"]["agentName"], room)
            pid = await runner_pid(bench, name, busy=True)
            if question:
                await caller.wait_agent_track(120)
                _, said = await caller.say(await speak(question))
                await caller.agent_stops(said, timeout=120)
            await asyncio.sleep(SETTLE)
            out["in_call"] = container_memory(pid)
            print(
                f"{label}, in a call{' (one answered turn)' if question else ''}: {out['in_call']}",
                flush=True,
            )
        finally:
            await caller.leave()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await bench.deployments.delete(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    failed = False
    with environment("bench-memory-") as env:
        print(f"{machine()}, real node, load average {load_average():.1f}", flush=True)

        async def run() -> None:
            nonlocal failed
            async with operator_in(env, "bench-operator.log") as bench:
                for label, entrypoint, question, spec in AGENT_CASES:
                    try:
                        await one_agent(bench, label, entrypoint, question, spec)
                    except Exception as exc:
                        failed = True
                        print(f"{label}: FAILED: {type(exc).__name__}: {exc}", flush=True)

        asyncio.run(run())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
