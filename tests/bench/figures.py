"""What every benchmark prints with its figures: percentiles, failures and the machine's load.

The machine these benchmarks run on is shared, so each series records the 1-minute load
average while it ran (sampled at each measurement); a figure means little without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from devenv.environment import REPO_ROOT

RESULTS = REPO_ROOT / ".test-logs"
T = TypeVar("T")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear between the closest ranks)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def load_average() -> float:
    return os.getloadavg()[0]


def machine() -> str:
    return f"{os.cpu_count()} cores, {os.uname().machine}"


@dataclass
class Series:
    """One measured case: its values (seconds), its failures and the load while it ran."""

    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    def fail(self, why: str) -> None:
        self.failures.append(why)

    def sample_load(self) -> None:
        self.load.append(load_average())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(self.values), "failures": len(self.failures)}
        if self.values:
            out |= {
                "p50_ms": round(pct(self.values, 0.5) * 1000, 1),
                "p95_ms": round(pct(self.values, 0.95) * 1000, 1),
                "p99_ms": round(pct(self.values, 0.99) * 1000, 1),
                "mean_ms": round(statistics.fmean(self.values) * 1000, 1),
                "max_ms": round(max(self.values) * 1000, 1),
            }
        if self.load:
            out["load_mean"] = round(statistics.fmean(self.load), 2)
            out["load_max"] = round(max(self.load), 2)
        if self.failures:
            out["first_failures"] = self.failures[:3]
        return out


def row(label: str, summary: dict[str, Any], width: int = 50) -> str:
    """One table line: p50/p95/p99 in ms, N, failures and the load average."""
    load = f"{summary.get('load_mean', float('nan')):5.1f} ({summary.get('load_max', float('nan')):4.1f})"
    if not summary.get("n"):
        return f"{label:<{width}} {'-':>8} {'-':>8} {'-':>8} {0:>4} {summary['failures']:>5}  {load}"
    return (
        f"{label:<{width}} {summary['p50_ms']:>8} {summary['p95_ms']:>8} {summary['p99_ms']:>8} "
        f"{summary['n']:>4} {summary['failures']:>5}  {load}"
    )


def header(width: int = 50) -> str:
    columns = f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'N':>4} {'fail':>5}"
    return f"{'case':<{width}} {columns}  load mean (max)"


def write_json(name: str, result: dict[str, Any]) -> Path:
    """The benchmark's results as ``.test-logs/<name>.json``; prints where."""
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")
    return out


def run_in_tempdir(prefix: str, work: Callable[[Path], Awaitable[T]], timeout: float, what: str) -> T | None:
    """``work`` in a temporary folder, within ``timeout`` seconds; None, saying why, if it failed."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        try:
            return asyncio.run(asyncio.wait_for(work(Path(folder)), timeout))
        except (AssertionError, TimeoutError) as err:
            print(f"{what} benchmark failed: {err}", file=sys.stderr)
            return None
