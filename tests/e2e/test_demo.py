"""`make demo --oneshot` is the user's path and shows a spoken call: ``devenv/demo.py --oneshot``
runs as `make demo` runs it (in a network namespace of its own, with its own local cluster on a
real node), and its output names what the agent heard and answered, the pod, the status
columns, the Events and the job's metrics. Needs the images (``make images``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from devenv.environment import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def line_with(output: str, start: str) -> str:
    found = [line.strip() for line in output.splitlines() if line.strip().startswith(start)]
    assert found, f"no line starting {start!r} in the demo's output:\n{output}"
    return found[0]


def test_the_demo_places_a_call_and_prints_the_agents_answer() -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(REPO_ROOT / "devenv" / "netns-run"), sys.executable, "-m", "devenv.demo", "--oneshot"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    out = proc.stdout
    print(f"\n[demo] --oneshot took {time.monotonic() - t0:.1f}s; its output:\n{out}")
    assert proc.returncode == 0, f"the demo failed ({proc.returncode}):\n{out}\n{proc.stderr[-4000:]}"
    # the rule-based LLM of the shipped voice agent answers this question so, and calls get_weather
    assert "weather in paris" in line_with(out, "the agent heard:").lower()
    assert "sunny and warm" in line_with(out, "the agent answered:")
    assert {"paris", "sunny"} <= set(line_with(out, "the caller heard the agent say:").lower().split())
    assert "ran in pod voice-agent-" in out
    assert "JobEnded" in out
    assert "success" in line_with(out, "Normal   JobEnded")
    ended = line_with(out, "agent_operator_jobs_ended_total{")
    assert 'deployment="voice-agent"' in ended
    assert 'outcome="success"' in ended
    assert ended.endswith(" 1.0")
    assert "SUCCEEDED" in out, "the status columns (-o wide)"
