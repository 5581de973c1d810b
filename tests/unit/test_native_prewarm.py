"""The native runtime's prewarm: ``prewarm(userdata)`` beside the entrypoint runs once per pod
before the runner reports idle, and the job gets what it loaded as ``ctx.userdata``."""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_jobrunner.job import EntrypointError
from agent_jobrunner.jobruntime import NativeAgent, load_agent
from agent_jobrunner.prewarm import PrewarmError, native_prewarm

pytestmark = pytest.mark.unit


@pytest.fixture
def agent_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Writes a module with ``body`` and an entrypoint; the name it imports by."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str) -> str:
        name = f"prewarm_agent_{uuid.uuid4().hex[:8]}"
        source = textwrap.dedent(body) + "\n\nasync def entrypoint(ctx):\n    pass\n"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


async def test_an_async_prewarm_fills_the_userdata_the_job_gets(agent_module: Callable[[str], str]) -> None:
    name = agent_module(
        """
        CALLS = []

        async def prewarm(userdata):
            CALLS.append(1)
            userdata["model"] = "loaded"
        """,
    )
    agent = await load_agent("native", f"{name}:entrypoint")
    assert isinstance(agent, NativeAgent)
    assert agent.userdata == {"model": "loaded"}
    assert sys.modules[name].CALLS == [1], "once per pod, at load"


async def test_a_plain_prewarm_runs_off_the_event_loop(agent_module: Callable[[str], str]) -> None:
    name = agent_module(
        """
        import threading

        def prewarm(userdata):
            userdata["thread"] = threading.current_thread().name
        """,
    )
    agent = await load_agent("native", f"{name}:entrypoint")
    assert isinstance(agent, NativeAgent)
    assert agent.userdata["thread"] != threading.current_thread().name


async def test_no_prewarm_gives_empty_userdata(agent_module: Callable[[str], str]) -> None:
    agent = await load_agent("native", f"{agent_module('')}:entrypoint")
    assert isinstance(agent, NativeAgent)
    assert agent.userdata == {}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            "async def prewarm(userdata):\n    raise RuntimeError('no model file')",
            "raised RuntimeError: no model file",
        ),
        ("def prewarm(userdata):\n    raise OSError('read-only')", "raised OSError: read-only"),
        ("prewarm = 3", "is not a function"),
    ],
    ids=["async-raises", "sync-raises", "not-callable"],
)
async def test_a_failing_prewarm_is_the_pods_prewarm_failure(
    agent_module: Callable[[str], str], body: str, said: str
) -> None:
    """The runner reports an EntrypointError as PREWARM_FAILED in its Hello (the operator
    replaces the pod with backoff and says why: tests/e2e/test_prewarm_failures.py)."""
    with pytest.raises(EntrypointError, match=said):
        await load_agent("native", f"{agent_module(body)}:entrypoint")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_prewarm_that_hangs_fails_after_its_timeout(
    agent_module: Callable[[str], str], kind: str
) -> None:
    body = (
        "import asyncio\n\nasync def prewarm(userdata):\n    await asyncio.Event().wait()"
        if kind == "async"
        else "import threading\n\ndef prewarm(userdata):\n    threading.Event().wait()"
    )
    name = agent_module(body)
    with pytest.raises(PrewarmError, match=r"did not finish within 0.3s"):
        await native_prewarm(importlib.import_module(name), timeout=0.3)
