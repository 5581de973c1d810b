"""Where a dispatch's time goes, from the logs of the side that served it (``dispatch_latency``).

Every measured dispatch is known by its room, its wall-clock dispatch time and its time to
ACTIVE. The operator's log gives, per room: the offer answered (``accepted job``), the job
placed on a pod (``job assigned ...``) and the runner holding the job (its forwarded ``job ...
received for room`` record, stamped by the runner's clock: the same host's). livekit-agents'
worker log (JSON, its production format) gives the offer received (``received job request``).
A stage missing from the log for a room is left out of that stage only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.figures import pct

# what the benchmark agent logs (its message, then the room's name) -> the mark it sets
AGENT_MARKS = {"bench: entrypoint entered in room": "entered", "bench: connected to room": "connected"}
# (concurrency, room, wall-clock dispatch time, seconds to ACTIVE)
Call = tuple[int, str, float, float]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def operator_marks(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """room -> {answered, placed, runner, entered, connected}: the first of each, wall clock."""
    marks: dict[str, dict[str, float]] = {}
    for record in records:
        room, msg = record.get("room"), str(record.get("msg", ""))
        if not room or "ts" not in record:
            continue
        mark = marks.setdefault(str(room), {})
        if msg == "accepted job":
            mark.setdefault("answered", _stamp(record["ts"]))
        elif msg.startswith("job assigned"):
            mark.setdefault("placed", _stamp(record["ts"]))
        elif " received for room " in msg and record.get("runner_ts_us"):
            mark.setdefault("runner", int(record["runner_ts_us"]) / 1e6)
        elif record.get("runner_ts_us") and (agent := _agent_mark(msg)) is not None:
            mark.setdefault(agent[0], int(record["runner_ts_us"]) / 1e6)
    return marks


def _agent_mark(message: str) -> tuple[str, str] | None:
    """(mark, room) of the benchmark agent's own records (``tests/agents/lka_bench.py``)."""
    for prefix, mark in AGENT_MARKS.items():
        if message.startswith(prefix):
            return mark, message[len(prefix) :].strip()
    return None


def lka_marks(log: Path) -> dict[str, dict[str, float]]:
    """room -> {answered, entered, connected}: livekit-agents' worker received the offer (it
    answers at once), then the benchmark agent's own marks."""
    marks: dict[str, dict[str, float]] = {}
    if not log.exists():
        return marks
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            message = str(record.get("message", ""))
            if message == "received job request" and record.get("room"):
                marks.setdefault(str(record["room"]), {})["answered"] = _stamp(record["timestamp"])
            elif (agent := _agent_mark(message)) is not None:
                marks.setdefault(agent[1], {}).setdefault(agent[0], _stamp(record["timestamp"]))
    return marks


def stages(calls: list[Call], marks: dict[str, dict[str, float]]) -> dict[int, dict[str, dict[str, float]]]:
    """Per concurrency, per stage: n, p50 and p95 in ms."""
    order = ["answered", "placed", "runner", "entered", "connected"]
    out: dict[int, dict[str, dict[str, float]]] = {}
    for concurrency in sorted({c for c, *_ in calls}):
        spans: dict[str, list[float]] = {}
        for _, room, t0, elapsed in (c for c in calls if c[0] == concurrency):
            mark = marks.get(room, {})
            points = [("dispatch", t0), *((k, mark[k]) for k in order if k in mark), ("active", t0 + elapsed)]
            for (a, ta), (b, tb) in itertools.pairwise(points):
                spans.setdefault(f"{a} -> {b}", []).append(tb - ta)
        out[concurrency] = {
            name: {
                "n": len(values),
                "p50_ms": round(pct(values, 0.5) * 1000, 1),
                "p95_ms": round(pct(values, 0.95) * 1000, 1),
            }
            for name, values in spans.items()
        }
    return out


def print_stages(label: str, table: dict[int, dict[str, dict[str, float]]]) -> None:
    for concurrency, spans in table.items():
        print(f"  {label}, {concurrency} at a time:")
        for name, s in spans.items():
            print(f"    {name:<22} n={s['n']:<3} p50 {s['p50_ms']:>7.1f} ms  p95 {s['p95_ms']:>7.1f} ms")
