"""Supervisor capacity: K attached runners at the default ping interval.

    python -m tests.bench.supervisor_capacity --runners 500 1000 2000 4000 [--window 30]

Starts the real API server (for TokenReview), creates K pods and pod-bound tokens, runs the
operator's Supervisor alone in one process and K simulated runners in another, waits until
all are attached, then measures over a steady window: the supervisor process's CPU (% of
one core), its RSS, and the p99 ping->pong round trip from its own heartbeat histogram
(interpolated within buckets). A case that fails prints the failure, never a number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from devenv.environment import REPO_ROOT, TestEnvironment
from devenv.kubeclient import api_client, create_namespace
from devenv.procs import free_port
from tests.support.supervision import parked_pod, pod_token

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def families(metrics_port: int) -> list[Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        return list(text_string_to_metric_families(resp.read().decode()))


def rtt_buckets(metrics_port: int) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for family in families(metrics_port):
        if family.name == "agent_operator_heartbeat_rtt_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def attach_refusals(metrics_port: int) -> dict[str, int]:
    """Refused attaches so far, by reason (from the supervisor's own metric)."""
    out: dict[str, int] = {}
    for family in families(metrics_port):
        if family.name == "agent_operator_runner_attach_failures":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    out[sample.labels["reason"]] = int(sample.value)
    return out


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, int]:
    """Quantile of the observations between two cumulative bucket snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        raise RuntimeError("no pong was observed in the window")
    target = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= target:
            if bound == float("inf"):
                return prev_bound, int(total)
            share = (target - prev_count) / max(count - prev_count, 1e-9)
            return prev_bound + (bound - prev_bound) * share, int(total)
        prev_bound, prev_count = bound, count
    return bounds[-1], int(total)


async def make_pods(api: client.ApiClient, namespace: str, count: int) -> list[dict[str, str]]:
    core = client.CoreV1Api(api)
    sem = asyncio.Semaphore(24)

    async def one(i: int) -> dict[str, str]:
        async with sem:
            pod = await parked_pod(core, namespace, f"sim-{i:05d}")
            token = await pod_token(core, pod)
            return {
                "namespace": namespace,
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
                "token": token,
            }

    return list(await asyncio.gather(*(one(i) for i in range(count))))


class LineReader:
    """Collects a child's output lines in a thread, so waiting for one never blocks on a read."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"exited with {self.proc.returncode} before {prefix!r}: {self.seen[-20:]}"
                    ) from None
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise TimeoutError(f"no {prefix!r} within {timeout:.0f}s: {self.seen[-20:]}")


def measure(env: TestEnvironment, pods: list[dict[str, str]], window: float, workdir: Path) -> dict[str, Any]:
    assert env.kube is not None
    pods_file = workdir / f"pods-{len(pods)}.json"
    pods_file.write_text(json.dumps(pods))
    metrics_port = free_port()
    py_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    host = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.bench.supervisor_host",
            f"--kubeconfig={env.kube.kubeconfig}",
            f"--pods={pods_file}",
            f"--metrics-port={metrics_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=py_env,
        cwd=REPO_ROOT,
    )
    sim: subprocess.Popen[str] | None = None
    try:
        port = int(LineReader(host).wait("READY", 60).split()[1])
        t0 = time.monotonic()
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.sim_runners",
                f"--address=127.0.0.1:{port}",
                f"--pods={pods_file}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=py_env,
            cwd=REPO_ROOT,
        )
        attached = LineReader(sim).wait("ATTACHED", 60 + len(pods) * 0.1)
        attach_s = time.monotonic() - t0
        time.sleep(5)  # settle: every session has pinged
        cpu0, b0, w0 = cpu_seconds(host.pid), rtt_buckets(metrics_port), time.monotonic()
        time.sleep(window)
        cpu1, b1, w1 = cpu_seconds(host.pid), rtt_buckets(metrics_port), time.monotonic()
        rss, peak = rss_mib(host.pid)
        p99, pongs = quantile(b0, b1, 0.99)
        p50, _ = quantile(b0, b1, 0.50)
        if host.poll() is not None or sim.poll() is not None:
            raise RuntimeError("a process died during the window")
        return {
            "runners": len(pods),
            "attach_all_s": round(attach_s, 2),
            "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
            "rss_mib": round(rss, 1),
            "peak_rss_mib": round(peak, 1),
            "pong_rtt_p50_ms": round(p50 * 1000, 2),
            "pong_rtt_p99_ms": round(p99 * 1000, 2),
            "pongs_in_window": pongs,
            "expected_pongs": int(len(pods) * (w1 - w0) / 2.5),
            "window_s": round(w1 - w0, 1),
            "attach": attached,
            "attach_refusals_by_reason": attach_refusals(metrics_port),
        }
    finally:
        for proc in (sim, host):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def setup(env: TestEnvironment, count: int) -> list[dict[str, str]]:
    assert env.kube is not None
    api = await api_client(env.kube.kubeconfig)
    async with api:
        core = client.CoreV1Api(api)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        await create_namespace(core, ns)
        return await make_pods(api, ns, count)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runners", type=int, nargs="+", default=[500])
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument(
        "--json", type=Path, default=REPO_ROOT / ".test-logs" / "bench-supervisor-capacity.json"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    env = TestEnvironment(workdir, livekit=False, kubelet=False)
    env.start()
    results: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        pods = asyncio.run(setup(env, max(args.runners)))
        print(f"created {len(pods)} pods and tokens in {time.monotonic() - t0:.1f}s", flush=True)
        for k in args.runners:
            try:
                row = measure(env, pods[:k], args.window, workdir)
            except Exception as exc:
                row = {"runners": k, "error": f"{type(exc).__name__}: {exc}"}
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        env.stop()
    day = time.strftime("%Y-%m-%d")
    print(f"\nSupervisor capacity ({os.cpu_count()} cores, {day}, window {args.window:.0f}s)")
    header = ("runners", "CPU % of 1 core", "RSS MiB", "RTT p50 ms", "RTT p99 ms", "pongs")
    print(f"{header[0]:>8} {header[1]:>16} {header[2]:>8} {header[3]:>11} {header[4]:>11} {header[5]:>12}")
    for row in results:
        if "error" in row:
            print(f"{row['runners']:>8}  FAILED: {row['error']}")
        else:
            print(
                f"{row['runners']:>8} {row['cpu_percent_of_one_core']:>16} {row['rss_mib']:>8} "
                f"{row['pong_rtt_p50_ms']:>11} {row['pong_rtt_p99_ms']:>11} "
                f"{row['pongs_in_window']:>6}/{row['expected_pongs']:<5}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))
    print(f"written {args.json}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
