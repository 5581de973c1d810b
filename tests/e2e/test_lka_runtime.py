"""The livekit-agents runtime as a real runner process: scripted operator side, real livekit-server.

The agents are livekit-agents agents as their authors write them (``tests/agents/lka_agents.py``):
an ``AgentServer``, a ``WorkerOptions`` and a bare entrypoint. Nothing of livekit-agents'
worker runs; the job, URL and token come over our stream and the outcomes are ours.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from livekit import rtc

from agent_jobrunner.protocol import pb
from devenv.livekit import LiveKitAccess, room_token
from tests.support.scripted_supervisor import (
    RunnerProcess,
    Runners,
    Session,
    SupervisorServer,
    start_request,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AGENTS = "tests.agents.lka_agents"


@pytest.fixture
async def runners(tmp_path: Path) -> AsyncIterator[Callable[..., RunnerProcess]]:
    made = Runners(tmp_path)

    def make(port: int, attribute: str, env: dict[str, str] | None = None) -> RunnerProcess:
        return made.make(port, f"{AGENTS}:{attribute}", {"AGENT_RUNTIME": "livekit-agents", **(env or {})})

    yield make
    await made.close()


@pytest.fixture
async def caller_room() -> AsyncIterator[rtc.Room]:
    room = rtc.Room()
    yield room
    await room.disconnect()


async def start_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: rtc.Room,
    attribute: str,
    mode: str = "",
    state: pb.RunnerState.ValueType = pb.RUNNER_STATE_IDLE,
    env: dict[str, str] | None = None,
) -> tuple[RunnerProcess, Session, str]:
    """Start the agent ``attribute`` names, attached in ``state``, and send it a job."""
    room = f"lka-{uuid.uuid4().hex[:8]}"
    await caller.connect(livekit.url, room_token(livekit, room, "caller"))
    runner = runners(supervisor.port, attribute, {"LKA_TEST_MODE": mode, **(env or {})})
    await runner.start()
    session = await supervisor.servicer.session()
    assert session.hello.state == state
    request, job = start_request(livekit, room)
    session.send(pb.SupervisorMessage(start_job=request))
    return runner, session, job.id


@pytest.mark.parametrize("attribute", ["server", "options"])
async def test_agent_runs_in_a_real_job_context_and_shuts_itself_down(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
    attribute: str,
) -> None:
    runner, session, job_id = await start_job(
        supervisor, runners, livekit, caller_room, attribute, "shutdown"
    )
    assert (await session.expect("start_job_response")).error == ""
    connected = await session.expect_log("lka entrypoint connected")
    # the prewarm's userdata reached the job; the context is the job the operator sent
    assert connected.extra["userdata"] == "prewarmed-42"
    assert connected.extra["ctx_job_id"] == job_id
    assert connected.extra["agent_identity"] == f"agent-{job_id}"
    assert connected.extra["room_name"] == caller_room.name
    # the job's fields on the agent's own records
    assert connected.extra["job_id"] == job_id
    assert connected.extra["room"] == caller_room.name
    arrived = await session.expect_log("participant arrived")
    assert arrived.extra["participant"] == "caller"
    assert (await session.expect_log("participant entrypoint ran")).extra["participant"] == "caller"
    # ctx.shutdown(): a successful end, with the shutdown callbacks given its reason
    user_exit = await session.expect("user_exit")
    assert user_exit.reason == "the agent is done"
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)
    callback = await session.expect_log("shutdown callback ran")
    assert callback.extra["shutdown_reason"] == "the agent is done"
    if attribute == "server":  # a WorkerOptions has no on_session_end
        ended = await session.expect_log("on_session_end ran")
        assert ended.extra["ctx_job_id"] == job_id
        said = [r.message for r in session.logs()]
        # livekit-agents' order: the session-end callback, then the shutdown callbacks
        assert said.index("on_session_end ran") < said.index("shutdown callback ran"), said
    assert await runner.wait() == 0
    assert not session.of("job_status") or all(
        s.job_status.state != pb.JOB_STATE_FAILED for s in session.of("job_status")
    )


async def test_the_job_is_running_once_its_ctx_connect_has_joined_the_room(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
    tmp_path: Path,
) -> None:
    """The runner answers the StartJobRequest once the entrypoint runs, but says
    JOB_STATE_RUNNING only when the entrypoint's ``ctx.connect()`` has joined the room (the
    operator holds the pool's refill back until then: a pod start takes the CPU of the join)."""
    gate = tmp_path / "connect-now"
    runner, session, job_id = await start_job(
        supervisor, runners, livekit, caller_room, "server", env={"LKA_TEST_CONNECT_GATE": str(gate)}
    )
    assert (await session.expect("start_job_response")).error == ""
    await session.expect_log("lka entrypoint waiting to connect")
    await asyncio.sleep(1.0)  # a RUNNING sent with the answer would have come by now
    states = [m.job_status.state for m in session.of("job_status")]
    assert states == [pb.JOB_STATE_CONNECTING], [pb.JobState.Name(s) for s in states]
    assert f"agent-{job_id}" not in caller_room.remote_participants
    gate.touch()
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_RUNNING)
    await session.expect_log("lka entrypoint connected")
    states = [m.job_status.state for m in session.of("job_status")]
    assert states == [pb.JOB_STATE_CONNECTING, pb.JOB_STATE_RUNNING]
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="drain", grace_ms=10_000)))
    await session.expect("shutdown_response")
    assert await runner.wait() == 0


async def test_the_entrypoint_returning_does_not_end_the_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
) -> None:
    runner, session, _ = await start_job(supervisor, runners, livekit, caller_room, "entrypoint")
    assert (await session.expect("start_job_response")).error == ""
    await session.expect_log("the entrypoint returned; the job goes on")
    assert runner.running
    assert not session.of("user_exit")
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="drain", grace_ms=10_000)))
    assert (await session.expect_log("shutdown callback ran")).extra["shutdown_reason"] == "drain"
    await session.expect("shutdown_response")
    assert await runner.wait() == 0


async def test_an_entrypoint_that_raises_fails_the_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
) -> None:
    runner, session, _ = await start_job(supervisor, runners, livekit, caller_room, "server", "raise")
    status = await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_FAILED)
    assert "RuntimeError: the agent broke" in status.error
    assert await runner.wait() == 1


async def test_the_room_ending_ends_the_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
) -> None:
    from livekit import api

    runner, session, _ = await start_job(supervisor, runners, livekit, caller_room, "server")
    await session.expect_log("the entrypoint returned; the job goes on")
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=caller_room.name))
    await session.expect("user_exit")
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)
    assert await runner.wait() == 0


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("broken", "the prewarm (setup_fnc) raised RuntimeError: the model file is missing"),
        ("no_entrypoint", "is an AgentServer without an entrypoint"),
        ("PREWARMED", "runtime livekit-agents wants an AgentServer, a WorkerOptions or an async def"),
    ],
)
async def test_a_bad_agent_is_the_answer_to_the_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
    attribute: str,
    message: str,
) -> None:
    failed = pb.RUNNER_STATE_PREWARM_FAILED  # said before any job comes
    runner, session, _ = await start_job(supervisor, runners, livekit, caller_room, attribute, state=failed)
    assert message in session.hello.prewarm_error
    response = await session.expect("start_job_response")
    assert message in response.error
    assert await runner.wait() == 1


async def test_an_unsupported_livekit_agents_release_fails_the_start_saying_so(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller_room: rtc.Room,
    tmp_path: Path,
) -> None:
    # an image whose livekit-agents is 1.7.0: its metadata found first on the path
    shadow = tmp_path / "old-site"
    info = shadow / "livekit_agents-1.7.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: livekit-agents\nVersion: 1.7.0\n")
    from devenv.environment import REPO_ROOT

    room = f"lka-{uuid.uuid4().hex[:8]}"
    runner = runners(supervisor.port, "server", {"PYTHONPATH": f"{shadow}:{REPO_ROOT}"})
    await runner.start()
    session = await supervisor.servicer.session()
    assert session.hello.state == pb.RUNNER_STATE_PREWARM_FAILED
    assert "livekit-agents 1.7.0 is installed" in session.hello.prewarm_error
    request, _ = start_request(livekit, room)
    session.send(pb.SupervisorMessage(start_job=request))
    response = await session.expect("start_job_response")
    assert (
        "livekit-agents 1.7.0 is installed, but this runner supports livekit-agents>=1.8,<1.9"
        in response.error
    )
    assert "livekit-agent-operator[livekit-agents]" in response.error
    assert await runner.wait() == 1


async def test_the_pods_inference_process_serves_the_job(
    supervisor: SupervisorServer, livekit: LiveKitAccess, tmp_path: Path
) -> None:
    runner = RunnerProcess(
        tmp_path, supervisor.port, "tests.agents.lka_inference:server", {"AGENT_RUNTIME": "livekit-agents"}
    )
    await runner.start()
    try:
        session = await supervisor.servicer.session()
        # started with the agent, before the runner attached: a warm pod has it ready
        started = await session.expect_log("started the pod's inference process")
        request, _ = start_request(livekit, f"lka-{uuid.uuid4().hex[:8]}")
        session.send(pb.SupervisorMessage(start_job=request))
        answered = await session.expect_log("inference answered")
        assert answered.extra["answer"] == f"HELLO from {started.extra['inference_pid']}"
        assert started.extra["inference_pid"] != answered.extra["job_pid"]  # a process of its own
        await session.expect("user_exit")
        assert await runner.wait() == 0
        # and it went with the runner
        with pytest.raises(ProcessLookupError):
            os.kill(int(started.extra["inference_pid"]), 0)
    finally:
        print(f"--- runner output:\n{runner.output()[-8000:]}")
        await runner.kill()
