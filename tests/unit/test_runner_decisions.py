"""The runner's pure decisions: exit codes, end handling, subscribe policy, stream liveness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import rtc

from agent_jobrunner.job import EntrypointError, load_entrypoint
from agent_jobrunner.link import should_log_failure, silence_limit_seconds
from agent_jobrunner.outcome import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_OPERATOR_LOST,
    EndCause,
    exit_code,
    final_job_state,
    is_shutdown,
    is_user_exit,
    shutdown_budget,
)
from agent_jobrunner.protocol import pb
from agent_jobrunner.subscribe import subscribe_policy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (EndCause.ENTRYPOINT_RETURNED, EXIT_OK),
        (EndCause.USER_SHUTDOWN, EXIT_OK),
        (EndCause.ROOM_DISCONNECTED, EXIT_OK),
        (EndCause.SHUTDOWN_REQUESTED, EXIT_OK),
        (EndCause.SIGNALLED, EXIT_OK),
        (EndCause.ENTRYPOINT_FAILED, EXIT_JOB_FAILED),
        (EndCause.START_FAILED, EXIT_JOB_FAILED),
        (EndCause.OPERATOR_LOST, EXIT_OPERATOR_LOST),
    ],
)
def test_exit_codes(cause: EndCause, code: int) -> None:
    assert exit_code(cause) == code
    assert (EXIT_OK, EXIT_JOB_FAILED, EXIT_OPERATOR_LOST) == (0, 1, 4)


def test_every_cause_has_one_kind_of_end() -> None:
    for cause in EndCause:
        failed = final_job_state(cause) == pb.JOB_STATE_FAILED
        kinds = [is_user_exit(cause), is_shutdown(cause), failed and not is_shutdown(cause)]
        assert kinds.count(True) == 1, cause
        # a user exit is a success; only failures leave with a non-zero code
        assert (exit_code(cause) != EXIT_OK) == failed


def test_user_exits() -> None:
    assert is_user_exit(EndCause.ROOM_DISCONNECTED)
    assert is_user_exit(EndCause.USER_SHUTDOWN)
    assert not is_user_exit(EndCause.SHUTDOWN_REQUESTED)
    assert final_job_state(EndCause.SIGNALLED) == pb.JOB_STATE_SUCCEEDED


def test_shutdown_budget() -> None:
    assert shutdown_budget(2500, 10.0) == 2.5
    assert shutdown_budget(0, 10.0) == 10.0


@pytest.mark.parametrize(
    ("mode", "auto", "kinds"),
    [
        (pb.AUTO_SUBSCRIBE_UNSPECIFIED, True, set()),
        (pb.AUTO_SUBSCRIBE_ALL, True, set()),
        (pb.AUTO_SUBSCRIBE_NONE, False, set()),
        (pb.AUTO_SUBSCRIBE_AUDIO_ONLY, False, {rtc.TrackKind.KIND_AUDIO}),
        (pb.AUTO_SUBSCRIBE_VIDEO_ONLY, False, {rtc.TrackKind.KIND_VIDEO}),
    ],
)
def test_subscribe_policy(mode: pb.AutoSubscribe.ValueType, auto: bool, kinds: set[int]) -> None:
    policy = subscribe_policy(mode)
    assert policy.auto_subscribe is auto
    assert set(policy.kinds) == kinds
    for kind in (rtc.TrackKind.KIND_AUDIO, rtc.TrackKind.KIND_VIDEO):
        assert policy.wants(kind) is (kind in kinds)


def test_load_entrypoint() -> None:
    entry = load_entrypoint("tests.agents.simple:wait_forever")
    assert entry.__name__ == "wait_forever"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.agents.simple:not_async", "is not an async function"),
        ("tests.agents.simple:nope", "has no attribute 'nope'"),
        ("tests.agents.does_not_exist:entry", "cannot import tests.agents.does_not_exist"),
        ("tests.agents.simple", "is not package.module:function"),
    ],
)
def test_bad_entrypoints(spec: str, message: str) -> None:
    with pytest.raises(EntrypointError, match=message):
        load_entrypoint(spec)


def test_silence_limit() -> None:
    assert silence_limit_seconds(0) is None
    assert silence_limit_seconds(2500) == 25.0
    assert silence_limit_seconds(100) == 15.0  # never shorter than the floor


def test_failure_logging_is_rate_limited() -> None:
    logged = [n for n in range(1, 101) if should_log_failure(n)]
    assert logged[:3] == [1, 2, 3]
    assert len(logged) == 3 + 10


def test_an_agent_module_in_the_working_directory_imports_without_pythonpath(tmp_path: Path) -> None:
    """The example image copies agent.py to /app (its WORKDIR) and sets no PYTHONPATH; the
    ``agent-jobrunner`` script puts only its own directory on sys.path. Before, the example
    image's every pod failed its prewarm: "No module named 'agent'" (the real node, 2026-12-02)."""
    (tmp_path / "workdir_agent.py").write_text("async def entrypoint(ctx):\n    pass\n")
    code = (
        "from agent_jobrunner.job import load_entrypoint; "
        "print(load_entrypoint('workdir_agent:entrypoint').__name__)"
    )
    # -I: no working directory (nor PYTHONPATH) on sys.path, as for a console script
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "entrypoint"
