"""Memory of one livekit-agents job: a runner pod (runtime livekit-agents) against livekit-agents'
own job process, for the same agent file (``jobrunner/examples/weather-agent``), same machine.

    devenv/netns-run python -m tests.bench.lka_memory

Both run the example agent (AgentSession: Silero VAD prewarmed in setup_fnc, PocketSphinx in a
worker process of its own, the rule LLM, espeak-ng). Each side is measured idle (prewarmed,
waiting for a job) and in a call (after one answered question), as RSS and PSS (proportional
set size: pages shared with other processes, as a forkserver's children share them, counted
in part) summed over the job's processes. For the runner that is the runner and its
children: the whole pod. For livekit-agents it is one job process and its children, without
the worker process (the operator's part here) and its forkserver.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from agent_jobrunner.protocol import pb
from devenv import binaries
from devenv.caller import Caller
from devenv.environment import REPO_ROOT
from devenv.livekit import LiveKitAccess, LocalLiveKit
from devenv.speech import speak
from tests.support.lka_worker import EXAMPLE_PATH, example_worker
from tests.support.scripted_supervisor import RunnerProcess, SupervisorServer, start_request

SETTLE = 3.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in children(pid):
        out += tree(child)
    return out


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over ``pids``."""
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss += int(value.split()[0])
            elif name == "Pss":
                pss += int(value.split()[0])
    return rss, pss


def figure(label: str, pids: list[int]) -> str:
    rss, pss = memory_kb(pids)
    line = f"{label:<62} RSS {rss / 1024:6.0f} MB   PSS {pss / 1024:6.0f} MB   ({len(pids)} processes)"
    print(line, flush=True)
    return line


async def ask(caller: Caller) -> None:
    _, said = await caller.say(await speak("What is the weather in Paris?"))
    start = await caller.agent_starts(said)
    await caller.agent_stops(start)


async def runner_side(livekit: LiveKitAccess, workdir: Path) -> list[str]:
    supervisor = SupervisorServer()
    await supervisor.start()
    runner = RunnerProcess(
        workdir,
        supervisor.port,
        "agent:server",
        {"AGENT_RUNTIME": "livekit-agents", "PYTHONPATH": EXAMPLE_PATH},
    )
    caller = Caller()
    lines: list[str] = []
    try:
        await runner.start()
        session = await supervisor.servicer.session()
        await session.expect_log("prewarmed the agent (setup_fnc)")
        await asyncio.sleep(SETTLE)
        assert runner.proc is not None
        lines.append(figure("runner pod, idle (prewarmed, attached)", tree(runner.proc.pid)))
        await caller.join(livekit, f"mem-{uuid.uuid4().hex[:8]}")
        request, _ = start_request(livekit, caller.room.name, agent_name="weather-agent")
        session.send(pb.SupervisorMessage(start_job=request))
        await session.expect_log("weather agent ready")
        await caller.wait_agent_track()
        await ask(caller)
        await asyncio.sleep(SETTLE)
        lines.append(figure("runner pod, in a call (after one answered turn)", tree(runner.proc.pid)))
        session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="bench done", grace_ms=10_000)))
        await runner.wait(60)
    finally:
        await caller.leave()
        await runner.kill()
        await supervisor.stop()
    return lines


async def lka_side(livekit: LiveKitAccess, workdir: Path) -> list[str]:
    caller = Caller()
    lines: list[str] = []
    async with example_worker(livekit, workdir, f"mem-{uuid.uuid4().hex[:6]}") as worker:
        try:
            while b"process initialized" not in worker.log_path.read_bytes():  # noqa: ASYNC110 (a file)
                await asyncio.sleep(0.5)
            await asyncio.sleep(SETTLE)
            pid = worker.process.pid

            def job_processes() -> list[int]:
                # forked by the forkserver (the worker's child): the job processes, idle or busy
                servers = [p for p in children(pid) if "forkserver" in cmdline(p)]
                return [p for server in servers for p in children(server)]

            lines.append(figure("livekit-agents job process, idle (prewarmed)", job_processes()[:1]))
            lines.append(figure("livekit-agents worker process (not counted above)", [pid]))
            room = f"lka-mem-{uuid.uuid4().hex[:8]}"
            await caller.join(livekit, room)
            await worker.dispatch(room)
            await caller.wait_agent_track(120)
            await ask(caller)
            await asyncio.sleep(SETTLE)
            busy = [p for p in job_processes() if any("sphinx_worker" in cmdline(c) for c in children(p))]
            assert len(busy) == 1, [cmdline(p) for p in job_processes()]
            lines.append(
                figure("livekit-agents job process, in a call (after one answered turn)", tree(busy[0]))
            )
        except BaseException:
            kept = REPO_ROOT / ".test-logs" / "bench-lka-memory-worker.log"
            kept.parent.mkdir(exist_ok=True)
            kept.write_bytes(worker.log_path.read_bytes())
            print(f"the livekit-agents worker's output: {kept}", file=sys.stderr)
            raise
        finally:
            await caller.leave()
    return lines


async def run(workdir: Path) -> list[str]:
    binaries.ensure_all(["livekit-server"])
    server = LocalLiveKit(workdir / "livekit")
    livekit = server.start()
    try:
        (workdir / "runner").mkdir()
        (workdir / "lka").mkdir()
        return await runner_side(livekit, workdir / "runner") + await lka_side(livekit, workdir / "lka")
    finally:
        server.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lka-memory-") as folder:
        try:
            lines = asyncio.run(asyncio.wait_for(run(Path(folder)), 600))
        except (AssertionError, TimeoutError) as err:
            print(f"memory benchmark failed: {err!r}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
