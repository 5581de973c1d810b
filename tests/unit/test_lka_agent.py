"""The livekit-agents runtime's pure parts: which releases it takes, what an entrypoint names, prewarm."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit.agents import JobExecutorType, JobProcess

from agent_jobrunner.job import EntrypointError
from agent_jobrunner.lka.agent import agent_parts, prewarm, resolve
from agent_jobrunner.lka.version import version_problem
from tests.agents import lka_agents

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("version", ["1.8.0", "1.8.9", "1.8.10rc1"])
def test_supported_releases(version: str) -> None:
    assert version_problem(version) == ""


@pytest.mark.parametrize("version", ["1.7.1", "1.9.0", "2.0.0", "0.12.20", "dev"])
def test_unsupported_releases_say_what_to_install(version: str) -> None:
    problem = version_problem(version)
    assert (
        f"livekit-agents {version} is installed, but this runner supports livekit-agents>=1.8,<1.9" in problem
    )
    assert "livekit-agent-operator[livekit-agents]" in problem


def test_missing_livekit_agents_says_what_to_install() -> None:
    assert "livekit-agents is not installed" in version_problem(None)
    assert "livekit-agent-operator[livekit-agents]" in version_problem(None)


def test_an_agent_server_gives_its_session_prewarm_and_timeouts() -> None:
    parts = resolve("tests.agents.lka_agents:server")
    assert parts.style == "AgentServer"
    assert parts.entrypoint is lka_agents.entrypoint
    assert parts.setup is lka_agents.prewarm
    assert parts.prewarm_timeout == 10.0
    assert parts.session_end_timeout == 300.0


def test_worker_options_give_entrypoint_and_prewarm() -> None:
    parts = resolve("tests.agents.lka_agents:options")
    assert (parts.style, parts.entrypoint, parts.setup) == (
        "WorkerOptions",
        lka_agents.entrypoint,
        lka_agents.prewarm,
    )


def test_a_bare_entrypoint_function() -> None:
    parts = resolve("tests.agents.lka_agents:entrypoint")
    assert (parts.style, parts.entrypoint, parts.setup) == ("function", lka_agents.entrypoint, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.agents.lka_agents:no_entrypoint", "AgentServer without an entrypoint"),
        ("tests.agents.lka_agents:prewarm", "is a function; runtime livekit-agents wants"),
        ("tests.agents.lka_agents:PREWARMED", "is a str; runtime livekit-agents wants"),
        ("tests.agents.lka_agents:missing", "has no attribute 'missing'"),
        ("tests.agents.nowhere:server", "cannot import tests.agents.nowhere"),
    ],
)
def test_what_is_not_an_agent_is_named(spec: str, message: str) -> None:
    with pytest.raises(EntrypointError, match=message):
        resolve(spec)


def test_a_sync_entrypoint_in_worker_options_is_refused() -> None:
    from livekit.agents import WorkerOptions

    def sync_entry(ctx: object) -> None:
        return None

    with pytest.raises(EntrypointError, match="not an async function"):
        agent_parts(WorkerOptions(entrypoint_fnc=sync_entry), "m:options")  # type: ignore[arg-type]


def process() -> JobProcess:
    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)


async def test_prewarm_fills_userdata_off_the_event_loop() -> None:
    seen: dict[str, object] = {}

    def setup(proc: JobProcess) -> None:
        try:
            asyncio.get_running_loop()
            seen["loop"] = True
        except RuntimeError:
            seen["loop"] = False
        proc.userdata["model"] = "loaded"

    proc = process()
    await prewarm(setup, proc, 5.0)
    assert proc.userdata == {"model": "loaded"}
    assert seen["loop"] is False  # as in a livekit-agents job process: no loop while it prewarms


async def test_a_prewarm_that_raises_is_an_entrypoint_error() -> None:
    with pytest.raises(
        EntrypointError, match=r"prewarm \(setup_fnc\) raised RuntimeError: the model file is missing"
    ):
        await prewarm(lka_agents.broken_prewarm, process(), 5.0)


async def test_a_prewarm_that_hangs_times_out_without_blocking_the_loop() -> None:
    def hang(proc: JobProcess) -> None:
        time.sleep(3)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    with pytest.raises(EntrypointError, match=r"did not finish within 0.5s"):
        await prewarm(hang, process(), 0.5)
    assert time.monotonic() - started < 1.5
    assert ticks >= 5  # the loop went on while the prewarm hung
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
