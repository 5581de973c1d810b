"""The native runtime's side of failover (issue 15): a restarted job's entrypoint sees what its
dead pod last checkpointed (``ctx.restored``, ``ctx.restarts``), saves its own state with
``ctx.checkpoint``, and library code finds the job's context (``get_job_context()``)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_jobrunner.checkpoint import CheckpointTooLarge
from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.job import JobSession, current_job_context, get_job_context
from agent_jobrunner.jobruntime import load_agent
from agent_jobrunner.logforward import LogBuffer
from agent_jobrunner.outcome import EndCause, JobEnd
from agent_jobrunner.protocol import pb
from agent_jobrunner.runner import Runner
from tests.support.deployment_fakes import job as lk_job

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

ENTRYPOINT = """
import asyncio

from agent_jobrunner.job import get_job_context

SEEN = []
READY = asyncio.Event()
AT_SHUTDOWN = []


async def entrypoint(ctx):
    async def on_shutdown():
        AT_SHUTDOWN.append(get_job_context() is ctx)

    ctx.add_shutdown_callback(on_shutdown)

    async def helper():  # a task the entrypoint starts: library code finds the job
        return get_job_context()

    SEEN.append({
        "restored": ctx.restored,
        "restarts": ctx.restarts,
        "current": get_job_context() is ctx,
        "in_a_task": await asyncio.create_task(helper()) is ctx,
    })
    ctx.checkpoint({"notes": ["first"], "step": 1})
    ctx.checkpoint({"notes": ["first"], "step": 1})  # unchanged: not sent again
    ctx.checkpoint({"notes": ["first", "second"], "step": 2})
    READY.set()
    try:
        await asyncio.Event().wait()
    finally:  # the job ends: a last word, as a reply cut off is
        ctx.checkpoint({"notes": ["first", "second"], "step": "torn down"})
"""


@pytest.fixture
def agent_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], str]:
    monkeypatch.syspath_prepend(str(tmp_path))

    def write() -> str:
        name = f"failover_agent_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(ENTRYPOINT))
        return name

    return write


def start_request(job_id: str, **fields: Any) -> pb.StartJobRequest:
    job = lk_job(job_id)
    return pb.StartJobRequest(
        job=job.SerializeToString(), url="ws://127.0.0.1:1", token="not-a-real-token", **fields
    )


async def job_of_runner(name: str, request: pb.StartJobRequest) -> tuple[Runner, JobSession]:
    """A real runner takes the StartJobRequest; its job's session, with the room join left out
    (no LiveKit server in a unit test): the entrypoint starts as after a join."""
    runner = Runner(
        RunnerConfig(
            operator_address="127.0.0.1:1",
            pod_name="p",
            pod_namespace="ns",
            pod_uid="u",
            entrypoint=f"{name}:entrypoint",
        ),
        LogBuffer(),
    )
    runner._agent = await load_agent("native", f"{name}:entrypoint")
    runner._end = asyncio.get_running_loop().create_future()
    runner._on_message(pb.SupervisorMessage(start_job=request))
    for task in (runner._start_task, runner._watchdog):  # the room join and the re-attach watch
        assert task is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert runner._request is not None
    assert runner._job is not None
    session = runner._agent.job(runner._request, runner._job, runner._trigger, runner._checkpoints)
    assert isinstance(session, JobSession)
    session._launch()
    return runner, session


def sent_checkpoints(runner: Runner) -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    while (message := runner.link._next_outgoing()) is not None:
        if message.HasField("checkpoint"):
            c = message.checkpoint
            out.append((c.job_id, c.seq, json.loads(c.state)))
    return out


async def seen_by_entrypoint(name: str) -> dict[str, Any]:
    module = sys.modules[name]
    await asyncio.wait_for(module.READY.wait(), 5)
    seen: dict[str, Any] = module.SEEN[0]
    return seen


async def test_a_restarted_job_sees_its_restored_state_and_checkpoints_on_from_its_seq(
    agent_module: Callable[[], str],
) -> None:
    name = agent_module()
    restored = {"notes": ["before the crash"], "step": 7}
    request = start_request(
        "AJ_restarted", restored_state=json.dumps(restored).encode(), restarts=2, restored_seq=41
    )
    runner, session = await job_of_runner(name, request)
    try:
        seen = await seen_by_entrypoint(name)
        assert seen == {"restored": restored, "restarts": 2, "current": True, "in_a_task": True}
        assert sent_checkpoints(runner)[-1:] == [
            ("AJ_restarted", 43, {"notes": ["first", "second"], "step": 2})
        ]  # 42 was the first, 43 the latest (the link keeps only the latest)
        assert current_job_context() is None  # not outside the job's tasks
    finally:
        assert await session.stop("test over", 5)
    assert sys.modules[name].AT_SHUTDOWN == [True]  # a shutdown callback finds the job too


async def test_a_first_start_has_nothing_restored(agent_module: Callable[[], str]) -> None:
    name = agent_module()
    runner, session = await job_of_runner(name, start_request("AJ_first"))
    try:
        seen = await seen_by_entrypoint(name)
        assert (seen["restored"], seen["restarts"]) == (None, 0)
        assert [seq for _, seq, _ in sent_checkpoints(runner)] == [2]
        assert runner._checkpoints is not None
        assert runner._checkpoints.seq == 2
    finally:
        assert await session.stop("test over", 5)


async def test_an_unreadable_restored_state_starts_the_job_afresh(
    agent_module: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    name = agent_module()
    request = start_request("AJ_garbled", restored_state=b"\x00{garbled", restarts=1, restored_seq=3)
    _, session = await job_of_runner(name, request)
    try:
        seen = await seen_by_entrypoint(name)
        assert (seen["restored"], seen["restarts"]) == (None, 1)
        assert "unreadable, starting afresh" in caplog.text
    finally:
        assert await session.stop("test over", 5)


def test_outside_a_job_there_is_no_context() -> None:
    assert current_job_context() is None
    with pytest.raises(RuntimeError, match="no job context"):
        get_job_context()


async def test_a_checkpoint_over_the_bound_is_refused_with_a_clear_error(
    agent_module: Callable[[], str],
) -> None:
    name = agent_module()
    runner, session = await job_of_runner(name, start_request("AJ_big"))
    try:
        await seen_by_entrypoint(name)
        assert session._ctx is not None
        with pytest.raises(CheckpointTooLarge, match="over the bound of 32768 bytes"):
            session._ctx.checkpoint({"blob": "x" * 40_000})
        assert sent_checkpoints(runner)[-1][2] == {"notes": ["first", "second"], "step": 2}
    finally:
        assert await session.stop("test over", 5)


def outgoing(runner: Runner) -> list[str]:
    """What the runner's link would write next, in order (checkpoints by their step)."""
    out = []
    while (message := runner.link._next_outgoing()) is not None:
        kind = message.WhichOneof("message")
        if kind == "checkpoint":
            out.append(f"checkpoint {json.loads(message.checkpoint.state)['step']}")
        elif kind == "job_status":
            out.append(pb.JobState.Name(message.job_status.state))
        elif kind != "log":
            out.append(kind or "")
    return out


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        # the job ended on its own: it is not restarted, so its teardown is not checkpointed
        (
            EndCause.USER_SHUTDOWN,
            ["checkpoint 2", "user_exit", "JOB_STATE_SHUTTING_DOWN", "JOB_STATE_SUCCEEDED"],
        ),
        # the pod is deleted (its job may go on elsewhere): the teardown's checkpoint goes out,
        # before the job's last messages (the operator refuses one for an ended job)
        (
            EndCause.SIGNALLED,
            [
                "JOB_STATE_SHUTTING_DOWN",
                "checkpoint torn down",
                "JOB_STATE_SUCCEEDED",
                "shutdown_response",
            ],
        ),
    ],
)
async def test_checkpoints_end_before_the_jobs_last_messages(
    agent_module: Callable[[], str], cause: EndCause, expected: list[str]
) -> None:
    name = agent_module()
    runner, session = await job_of_runner(name, start_request("AJ_ending"))
    await seen_by_entrypoint(name)
    runner._session = session
    runner._start_answered = True
    await runner._finish(JobEnd(cause, reason="the end"))
    assert outgoing(runner) == expected
    runner.link.checkpoints.resend()  # a re-attach now: nothing is sent again
    assert outgoing(runner) == []
