"""An unmodified livekit-agents voice agent (``jobrunner/examples/weather-agent``) answers a caller.

The agent is an ``Agent`` with a ``@function_tool`` in an ``AgentSession`` (Silero VAD from
``livekit-plugins-silero``, the offline STT/LLM/TTS plugins of ``agent_jobrunner.lka.plugins``).
It runs twice against the same livekit-server: in our runner (scripted operator side, one job),
and under livekit-agents' own ``python agent.py start`` with an explicit dispatch. Both times a
caller asks for the weather in Paris, and the answer it hears is transcribed. With
``OPENAI_BASE_URL`` set, the same file's LLM is the official ``livekit-plugins-openai``, against a
local server speaking OpenAI's wire format (``tests/voicekit/fake_openai.py``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_jobrunner.protocol import pb
from devenv.caller import Caller
from devenv.livekit import LiveKitAccess
from tests.support.lka_worker import EXAMPLE_PATH, example_worker
from tests.support.scripted_supervisor import RunnerProcess, Session, SupervisorServer, start_request
from tests.support.weather_call import ANSWER_WORDS, ask
from tests.voicekit.fake_openai import FakeOpenAI
from tests.voicekit.interruption import interrupt_a_story
from tests.voicekit.supervisor import shutdown

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

# user speech while the agent talks must silence it within this long (as heard by the caller):
# AgentSession waits for min_interruption_duration (0.5 s) of speech before it stops
INTERRUPT_BOUND = 2.0


@pytest.fixture
async def example_runner(tmp_path: Path) -> AsyncIterator[tuple[SupervisorServer, RunnerProcess]]:
    """The example agent in a runner process, attached to a scripted operator side."""
    async with runner_of_the_example(tmp_path, {}) as pair:
        yield pair


@contextlib.asynccontextmanager
async def runner_of_the_example(
    tmp_path: Path, env: dict[str, str]
) -> AsyncIterator[tuple[SupervisorServer, RunnerProcess]]:
    supervisor = SupervisorServer()
    await supervisor.start()
    runner = RunnerProcess(
        tmp_path,
        supervisor.port,
        "agent:server",
        {"AGENT_RUNTIME": "livekit-agents", "PYTHONPATH": EXAMPLE_PATH, **env},
    )
    try:
        yield supervisor, runner
    finally:
        print(f"--- runner output:\n{runner.output()[-8000:]}")  # shown when the test failed
        await runner.kill()
        await supervisor.stop()


async def start_call(
    supervisor: SupervisorServer, runner: RunnerProcess, livekit: LiveKitAccess, caller: Caller
) -> tuple[Session, str]:
    """The caller in a fresh room, the runner attached idle and given that room's job; (session, job id)."""
    await caller.join(livekit, f"lka-voice-{uuid.uuid4().hex[:8]}")
    await runner.start()
    session = await supervisor.servicer.session()
    # the prewarm (Silero VAD) ran before the pod reported idle
    await session.expect_log("prewarmed the agent (setup_fnc)")
    assert session.hello.state == pb.RUNNER_STATE_IDLE
    request, job = start_request(livekit, caller.room.name, agent_name="weather-agent")
    session.send(pb.SupervisorMessage(start_job=request))
    assert (await session.expect("start_job_response")).error == ""
    await session.expect_log("weather agent ready")
    await caller.wait_agent_track()
    return session, job.id


async def test_the_example_answers_with_its_tool_in_a_runner_pod(
    livekit: LiveKitAccess, caller: Caller, example_runner: tuple[SupervisorServer, RunnerProcess]
) -> None:
    supervisor, runner = example_runner
    session, job_id = await start_call(supervisor, runner, livekit, caller)

    answer = await ask(caller)

    assert set(answer.split()) >= ANSWER_WORDS, answer
    called = await session.expect_log("get_weather called")
    assert called.extra["city"] == "paris"
    assert called.extra["job_id"] == job_id  # the agent's records carry the job's fields
    said = await session.expect_log(
        lambda r: r.message == "conversation item added" and r.extra.get("role") == "assistant",
        what="the assistant's reply in the conversation",
    )
    assert said.extra["content"] == "The weather in paris is sunny and warm."
    assert await shutdown(session, runner, 60) == 0


async def test_the_example_with_livekit_plugins_openai_answers_through_an_openai_compatible_server(
    livekit: LiveKitAccess, caller: Caller, tmp_path: Path
) -> None:
    """The same file with ``OPENAI_BASE_URL`` set: ``livekit-plugins-openai``'s LLM streams the
    tool call and the answer from the local server, and the caller hears the answer."""
    server = FakeOpenAI()
    base_url = await server.start()
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test"}
    try:
        async with runner_of_the_example(tmp_path, env) as (supervisor, runner):
            session, _ = await start_call(supervisor, runner, livekit, caller)
            answer = await ask(caller)
            assert set(answer.split()) >= ANSWER_WORDS, answer
            called = await session.expect_log("get_weather called")
            assert called.extra["city"] == "paris"  # the server's streamed tool call, in pieces
            assert await shutdown(session, runner, 60) == 0
    finally:
        await server.stop()
    asked, answered = server.chats()[:2]
    assert asked.headers["Authorization"] == "Bearer sk-test"
    assert asked.body["model"] == "gpt-test"
    assert asked.body["stream"] is True
    assert "get_weather" in {t["function"]["name"] for t in asked.body["tools"]}
    assert answered.body["messages"][-1]["role"] == "tool"  # the tool's result went back to the model
    assert answered.body["messages"][-1]["content"] == "sunny and warm"


async def test_the_caller_interrupts_and_the_agent_session_stops_speaking(
    livekit: LiveKitAccess, caller: Caller, example_runner: tuple[SupervisorServer, RunnerProcess]
) -> None:
    supervisor, runner = example_runner
    session, _ = await start_call(supervisor, runner, livekit, caller)
    cut_at, stopped = await interrupt_a_story(caller)
    assert cut_at < stopped < cut_at + INTERRUPT_BOUND
    cut = await session.expect_log(
        lambda r: (
            r.message == "conversation item added"
            and r.extra.get("role") == "assistant"
            and r.extra.get("interrupted") == "True"
        ),
        what="the interrupted story in the conversation",
    )
    assert cut.extra["content"].startswith("Once upon a time")
    assert await shutdown(session, runner, 60) == 0


async def test_the_same_file_runs_under_livekit_agents_own_worker(
    livekit: LiveKitAccess, caller: Caller, tmp_path: Path
) -> None:
    async with example_worker(livekit, tmp_path, f"weather-{uuid.uuid4().hex[:6]}") as worker:
        try:
            room = f"lka-start-{uuid.uuid4().hex[:8]}"
            await caller.join(livekit, room)
            await worker.dispatch(room)
            await caller.wait_agent_track(120)

            answer = await ask(caller)

            assert set(answer.split()) >= ANSWER_WORDS, answer
        finally:
            print(f"--- worker output:\n{worker.output()[-8000:]}")
