"""A runner warms up, before it attaches, what its one job would otherwise do for the first
time: the livekit-rtc runtime and, for a livekit-agents agent, that framework's own preload
(without the ~250 MB local-inference weights a pod shares with no one).

Each case runs in a fresh interpreter: the rtc runtime is per process and cannot be undone.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent_jobrunner import warmup

pytestmark = pytest.mark.unit

# livekit-agents 1.8.0, the lowest release supported, has no preload module; later 1.8 ones do
HAS_PRELOAD = importlib.util.find_spec(warmup.LKA_PRELOAD_MODULE) is not None

RUNNER_SCRIPT = """
import asyncio, json, sys
from livekit.rtc._ffi_client import FfiClient
from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.logforward import LogBuffer
from agent_jobrunner.outcome import EndCause, JobEnd
from agent_jobrunner.runner import Runner

seen = {"before": FfiClient._instance is not None}

async def main() -> None:
    runner = Runner(
        RunnerConfig(
            operator_address="127.0.0.1:1", pod_name="p", pod_namespace="ns", pod_uid="u",
            entrypoint="warm_agent:entrypoint", runtime=sys.argv[1],
        ),
        LogBuffer(),
    )

    def attach() -> None:  # the runner attaches: what is warm by then
        seen["at_attach"] = FfiClient._instance is not None
        seen["preload"] = "livekit.agents.ipc._preload" in sys.modules
        runner._trigger(JobEnd(EndCause.SIGNALLED, reason="SIGTERM"))

    runner.link.start = attach
    await runner.run()

asyncio.run(main())
print(json.dumps(seen))
"""

WARMUP_SCRIPT = """
import asyncio, json, os, sys
from livekit.rtc._ffi_client import FfiClient
import livekit.agents
from agent_jobrunner.warmup import warm_up

def rss_mb() -> float:
    status = open(f"/proc/{os.getpid()}/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024

before = rss_mb()
asyncio.run(warm_up("livekit-agents"))
print(json.dumps({
    "ffi": FfiClient._instance is not None,
    "preload": "livekit.agents.ipc._preload" in sys.modules,
    "env": os.environ.get("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"),
    "grew_mb": rss_mb() - before,
}))
"""


def run_python(script: str, cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
    environment = {**os.environ, "PYTHONPATH": path, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    (tmp_path / "warm_agent.py").write_text(
        textwrap.dedent(
            """
            from livekit.agents import AgentServer

            async def entrypoint(ctx):
                pass

            server = AgentServer()
            server.rtc_session()(entrypoint)
            """
        )
    )
    return tmp_path


@pytest.mark.parametrize("runtime", ["native", "livekit-agents"])
def test_the_rtc_runtime_is_up_before_the_runner_attaches(agent_dir: Path, runtime: str) -> None:
    seen = run_python(RUNNER_SCRIPT, agent_dir, runtime)
    assert seen["before"] is False, "a fresh process has no rtc runtime: the check would show nothing"
    assert seen["at_attach"] is True
    assert seen["preload"] is (runtime == "livekit-agents" and HAS_PRELOAD)


def test_the_livekit_agents_preload_runs_without_the_local_inference_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(warmup.PRELOAD_LOCAL_INFERENCE, raising=False)  # as in a pod that does not set it
    seen = run_python(WARMUP_SCRIPT, tmp_path)
    assert seen["ffi"] is True
    assert seen["preload"] is HAS_PRELOAD
    assert seen["env"] is None, "the pod's environment is left as it was"
    # the end-of-turn weights alone are about 250 MB
    assert seen["grew_mb"] < 100, seen


def test_a_preload_setting_of_the_user_is_kept(tmp_path: Path) -> None:
    seen = run_python(WARMUP_SCRIPT, tmp_path, env={warmup.PRELOAD_LOCAL_INFERENCE: "off"})
    assert seen["env"] == "off"
    assert seen["preload"] is HAS_PRELOAD


async def test_a_step_that_fails_is_logged_and_the_rest_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise OSError("cannot map the library")

    steps = [("broken", broken), ("next", lambda: ran.append("next"))]
    monkeypatch.setattr(warmup, "steps", lambda runtime: steps)
    with caplog.at_level(logging.WARNING, logger="agent_jobrunner.warmup"):
        await warmup.warm_up("native")
    assert ran == ["next"]
    assert "could not warm up broken: OSError: cannot map the library" in caplog.text
