"""Where a room join from a pod loses time: the same join, from five places, interleaved.

The dispatch benchmark finds the runner's room join from a warm pod slower than
livekit-agents' join from its own process on the host. This benchmark takes the agent out
and measures only a join (``rtc.Room.connect`` of a fresh, already imported process), from:

  H. the host: the benchmark's Python, the host's network namespace;
  P. the pod's network: the same Python, in a warm pool pod's network namespace (its CNI
     address, the bridge, kube-proxy's rules), so only the network path differs from H;
  C. the pod: the runner image's Python and libraries, in the pod's mount, network, IPC and
     UTS namespaces and its container's cgroups, as the runner itself joins;
  L. as H, with ``livekit.agents`` imported first (the heap a livekit-agents runner has);
  F. as L, then ``gc.freeze()`` (as livekit-agents' forkserver does).

Each joiner also counts the full garbage collections that ran during its connect.

Each join: a room is created, then the joiner is told to go. Figures: go -> ``connect()``
returned (the joiner's clock) and go -> the server lists the joiner ACTIVE (polled every
10 ms, as the dispatch benchmark does; one machine, one clock).

    devenv/netns-run .venv/bin/python -m tests.bench.join_path --n 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import api
from livekit.protocol import models

from devenv.environment import TestEnvironment
from devenv.livekit import LiveKitAccess
from tests.bench.dispatch_latency import POLL, pool_full
from tests.bench.figures import Series, header, load_average, machine, row, write_json
from tests.bench.operator_env import environment, node_kind, operator_in
from tests.support.operator import AGENTS, agent_deployment, pid

JOINER = """
import asyncio, gc, json, sys, time
from livekit import rtc
if sys.argv[3] != "bare":
    import livekit.agents  # the heap a livekit-agents runner has
if sys.argv[3] == "frozen":
    gc.freeze()
full = []
def count(phase, info):
    if phase == "stop" and info["generation"] == 2:
        full.append(1)
gc.callbacks.append(count)
async def main():
    url, token = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    full.clear()
    t0 = time.time()
    room = rtc.Room()
    await room.connect(url, token)
    done = time.time()
    print(json.dumps({"go": t0, "connected": done, "rtc": rtc.__version__, "full_gc": len(full)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await room.disconnect()
asyncio.run(main())
"""
RUNNER_PYTHON = "/opt/venv/bin/python"  # the runner image's (jobrunner/Dockerfile)
LABELS = {
    "H": "H. host Python, host network",
    "P": "P. host Python, pod network",
    "C": "C. runner image Python, pod namespaces and cgroups",
    "L": "L. as H, livekit.agents imported",
    "F": "F. as L, then gc.freeze()",
}
HEAP = {"L": "lka", "F": "frozen"}


@dataclass
class Place:
    key: str
    connect: Series = field(default_factory=Series)
    active: Series = field(default_factory=Series)
    rtc_version: str = ""
    full_gcs: int = 0  # full collections during the connects


def command(key: str, runner_pid: int) -> list[str]:
    if key in "HLF":
        return [sys.executable, "-c", JOINER]
    if key == "P":
        return ["nsenter", f"--net=/proc/{runner_pid}/ns/net", "--", sys.executable, "-c", JOINER]
    return ["nsenter", "-t", str(runner_pid), "-m", "-n", "-i", "-u", "--", RUNNER_PYTHON, "-c", JOINER]


def join_cgroups(child: int, of: int) -> None:
    """Move ``child`` into every cgroup (v1) that ``of`` is in."""
    for line in Path(f"/proc/{of}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers or controllers.startswith("name="):
            continue
        procs = Path("/sys/fs/cgroup") / controllers / path.lstrip("/") / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(child))


def token(livekit: LiveKitAccess, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


async def seen_active(lk: api.LiveKitAPI, room: str, identity: str) -> float:
    """When the server lists ``identity`` ACTIVE (polled every 10 ms, as the dispatch benchmark)."""
    while True:
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        if any(
            p.identity == identity and p.state == models.ParticipantInfo.ACTIVE for p in resp.participants
        ):
            return time.time()
        await asyncio.sleep(POLL)


async def one_join(lk: api.LiveKitAPI, livekit: LiveKitAccess, place: Place, runner_pid: int) -> None:
    room = f"join-{uuid.uuid4().hex[:8]}"
    identity = f"joiner-{place.key}-{uuid.uuid4().hex[:4]}"
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
    joiner = await asyncio.create_subprocess_exec(
        *command(place.key, runner_pid),
        livekit.url,
        token(livekit, room, identity),
        HEAP.get(place.key, "bare"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert joiner.stdin is not None
    assert joiner.stdout is not None
    try:
        if place.key == "C":
            await asyncio.to_thread(join_cgroups, joiner.pid, runner_pid)
        ready = await asyncio.wait_for(joiner.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"joiner did not start: {ready!r}")
        place.connect.sample_load()
        joiner.stdin.write(b"go\n")
        await joiner.stdin.drain()
        seen = await asyncio.wait_for(seen_active(lk, room, identity), 30)
        said = json.loads(await asyncio.wait_for(joiner.stdout.readline(), 30))
        place.rtc_version = said["rtc"]
        place.connect.add(said["connected"] - said["go"])
        place.active.add(seen - said["go"])
        place.full_gcs += int(said["full_gc"])
        joiner.stdin.write(b"bye\n")
        await joiner.stdin.drain()
        await asyncio.wait_for(joiner.wait(), 30)
    except Exception as exc:
        place.connect.fail(f"{type(exc).__name__}: {exc}")
        place.active.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if joiner.returncode is None:
            joiner.kill()
            await joiner.wait()
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def measure(env: TestEnvironment, args: argparse.Namespace, out: dict[str, Any]) -> None:
    async with operator_in(env, "bench-operator.log") as bench:
        spec = agent_deployment("warm", bench.livekit, f"{AGENTS}:idle", warmPool={"size": 1})
        body = await bench.deployments.create(spec)
        name = body["metadata"]["name"]
        await pool_full(bench.deployments, name, 1)()
        pod = (await bench.deployments.pods(name))[0]
        runner_pid = await pid(bench.deployments, pod)
        out["pod"] = pod.metadata.name
        places = [Place(key) for key in args.places]
        livekit = bench.livekit
        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            for place in places:  # warm-up, discarded
                await one_join(lk, livekit, place, runner_pid)
                place.connect, place.active = Series(), Series()
            for r in range(args.n):
                for place in places[r % len(places) :] + places[: r % len(places)]:
                    await one_join(lk, livekit, place, runner_pid)
                    await asyncio.sleep(args.gap)
                if (r + 1) % 5 == 0:
                    print(f"  round {r + 1}/{args.n} (load {load_average():.1f})", flush=True)
        for place in places:
            out["join"][f"{LABELS[place.key]}: connect() returned"] = place.connect.summary()
            out["join"][f"{LABELS[place.key]}: seen active"] = place.active.summary()
            out["rtc"][place.key] = place.rtc_version
            out["full_gcs"][place.key] = place.full_gcs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20, help="joins per place")
    parser.add_argument("--places", default="HPCLF", help="which of H, P, C, L, F to measure")
    parser.add_argument("--gap", type=float, default=0.5, help="pause between joins, s")
    parser.add_argument("--json", default="bench-join-path", help="results as .test-logs/<this>.json")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "n": args.n,
        "load_start": load_average(),
        "join": {},
        "rtc": {},
        "full_gcs": {},
    }
    with environment("bench-join-") as env:
        out["node"] = node_kind(env)
        asyncio.run(measure(env, args, out))
    out["load_end"] = load_average()
    print(f"\nRoom join ({out['machine']}, {out['node']}, {out['date']}; N={out['n']} each, interleaved)")
    print(f"load average at the start {out['load_start']:.1f}, at the end {out['load_end']:.1f}")
    print(f"livekit rtc: {out['rtc']}; full GCs during the measured connects: {out['full_gcs']}")
    print(header(62))
    for key, summary in out["join"].items():
        print(row(key, summary, 62))
    write_json(args.json, out)
    return 1 if any(s["failures"] for s in out["join"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
