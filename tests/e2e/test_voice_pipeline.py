"""The voice pipeline end to end: a real runner process, a real livekit-server, real speech.

A caller joins the room and talks into a microphone track (speech synthesized with espeak-ng
here); the runner runs the example voice agent (Silero VAD, PocketSphinx, the rule-based
model, espeak-ng); the caller records the agent's track and transcribes it with the same
offline STT. What the agent did is also checked in its log records (the chat context).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent_jobrunner.protocol import pb
from agent_jobrunner.voice.providers.rules import STORY
from devenv.caller import Caller
from devenv.livekit import LiveKitAccess
from devenv.speech import speak, trailing_silence, transcribe
from tests.support.scripted_supervisor import RunnerProcess, Runners, Session, SupervisorServer
from tests.voicekit.fake_openai import FakeOpenAI
from tests.voicekit.interruption import interrupt_a_story
from tests.voicekit.supervisor import VOICE_AGENT, shutdown, start_job

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# user speech while the agent talks must silence it within this long (as heard by the caller)
INTERRUPT_BOUND = 1.5


@pytest.fixture
async def runners(tmp_path: Path) -> AsyncIterator[Callable[..., RunnerProcess]]:
    made = Runners(tmp_path)

    def make(port: int, env: dict[str, str] | None = None) -> RunnerProcess:
        return made.make(port, VOICE_AGENT, env)

    yield make
    await made.close()


async def start_agent(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
    env: dict[str, str] | None = None,
) -> tuple[RunnerProcess, Session]:
    room = f"voice-{uuid.uuid4().hex[:8]}"
    await caller.join(livekit, room)
    runner = runners(supervisor.port, env)
    await runner.start()
    session = await supervisor.servicer.session()
    start_job(session, livekit, room)
    assert (await session.expect("start_job_response")).error == ""
    await session.expect_log(lambda r: r.message == "voice agent ready", what="the agent getting ready")
    await session.expect_log(
        lambda r: r.message.startswith("listening to caller"), what="the agent listening"
    )
    await caller.wait_agent_track()
    return runner, session


async def ask(caller: Caller, text: str) -> tuple[float, float, str]:
    """Say ``text``, wait for the whole answer; (when the answer started, ended, its transcript)."""
    _, said = await caller.say(await speak(text))
    start = await caller.agent_starts(said)
    end = await caller.agent_stops(said)
    heard = await transcribe(caller.audio(start - 0.3, end + 0.3))
    return start, end, heard


def words(text: str) -> list[str]:
    return text.lower().replace(",", "").replace(".", "").split()


async def test_question_is_heard_answered_and_spoken(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    runner, session = await start_agent(supervisor, runners, livekit, caller)

    _, _, answer = await ask(caller, "What is the weather in Paris?")

    assert {"weather", "paris", "sunny", "warm"} <= set(answer.split()), answer
    transcript = await session.expect_event("TranscriptCommitted")
    assert transcript.extra["text"] == "what is the weather in paris"
    call = await session.expect_event("FunctionCalled")
    assert call.extra["voice_name"] == "get_weather"
    assert call.extra["arguments"] == '{"city": "paris"}'
    assert call.extra["result"] == "sunny and warm"
    said = await session.expect_event(
        "MessageAdded", lambda r: r.extra["role"] == "assistant" and r.extra["content"] != ""
    )
    assert said.extra["content"] == "The weather in paris is sunny and warm."
    assert said.extra["interrupted"] == "False"
    metrics = await session.expect_event("TurnCompleted")
    stages = {k: int(metrics.extra[f"{k}_ms"]) for k in ("endpointing", "stt", "llm", "tts", "playout")}
    assert sum(stages.values()) == pytest.approx(int(metrics.extra["latency_ms"]), abs=5)
    assert 300 <= stages["endpointing"] <= 1500  # the silence wait (0.5 s) dominates
    assert runner.running
    assert await shutdown(session, runner) == 0


async def test_interruption_stops_playback_and_is_recorded(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    runner, session = await start_agent(supervisor, runners, livekit, caller)
    cut_at, stopped = await interrupt_a_story(caller)
    assert stopped - cut_at < INTERRUPT_BOUND, (
        f"playback went on {stopped - cut_at:.2f}s after the interruption"
    )
    assert stopped > cut_at  # it did speak up to the interruption
    stop = await session.expect_event("AgentStoppedSpeaking", lambda r: r.extra["interrupted"] == "True")
    assert 2.0 < float(stop.extra["played"]) < 10.0
    cut = await session.expect_event(
        "MessageAdded", lambda r: r.extra["role"] == "assistant" and r.extra["interrupted"] == "True"
    )
    heard = words(cut.extra["content"])
    story = words(STORY)
    assert 3 <= len(heard) < len(story) // 2, cut.extra["content"]
    assert heard == story[: len(heard)]  # the part that was heard, from the start
    # and the interruption itself was understood and answered
    await session.expect_event("TranscriptCommitted", lambda r: r.extra["text"] == "hello who are you")
    answer_start = await caller.agent_starts(stopped + 0.5)
    answer_end = await caller.agent_stops(answer_start - 0.1)
    answer = await transcribe(caller.audio(answer_start - 0.3, answer_end + 0.3))
    assert {"voice", "agent"} <= set(answer.split()), answer
    assert await shutdown(session, runner) == 0


async def test_failing_llm_costs_one_turn_not_the_job(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    api = FakeOpenAI()
    api.chat_script = ["500", "broken"]
    await api.start()
    try:
        runner, session = await start_agent(
            supervisor,
            runners,
            livekit,
            caller,
            {"VOICE_LLM_BASE_URL": api.base_url, "OPENAI_API_KEY": "sk-x"},
        )
        question = await speak("What is the weather in Paris?")

        await caller.say(question)
        first = await session.expect_log(
            lambda r: r.message.startswith("voice turn failed at llm"), what="failure 1"
        )
        assert "APIStatusError: HTTP 500" in first.message
        assert first.level == pb.LOG_LEVEL_WARNING
        assert "Traceback" in first.exception

        await caller.say(question)
        await session.expect_log(
            lambda r: r.message.startswith("voice turn failed at llm") and "APIConnectionError" in r.message,
            what="failure 2",
        )
        assert runner.running

        _, said = await caller.say(question)
        start = await caller.agent_starts(said)
        end = await caller.agent_stops(said)
        answer = await transcribe(caller.audio(start - 0.3, end + 0.3))
        assert {"paris", "sunny", "warm"} <= set(answer.split()), answer

        chats = api.chats()
        assert len(chats) == 4  # 500, broken, then the tool call round and the answer round
        assert chats[-1].headers["Authorization"] == "Bearer sk-x"
        messages = chats[-1].body["messages"]
        assert messages[0]["role"] == "system"
        user_turns = [m["content"] for m in messages if m["role"] == "user"]
        assert user_turns == ["what is the weather in paris"] * 3  # the failed turns stay in the context
        assert messages[-1] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny and warm"}
        assert await shutdown(session, runner) == 0
    finally:
        await api.stop()


async def test_greeting_and_latency_per_turn(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    greeting = "Hello, I am a voice agent running in a job pod."
    runner, session = await start_agent(supervisor, runners, livekit, caller, {"VOICE_GREETING": greeting})
    # the greeting, said with pipeline.say(): heard, and in the context
    start = await caller.agent_starts(0.0)
    end = await caller.agent_stops(0.0)
    assert {"voice", "agent", "job", "pod"} <= set(
        (await transcribe(caller.audio(start - 0.3, end + 0.3))).split()
    )
    recorded = await session.expect_event("MessageAdded", lambda r: r.extra["role"] == "assistant")
    assert (recorded.extra["content"], recorded.extra["interrupted"]) == (greeting, "False")
    t0 = time.monotonic()
    for text in ("What is the weather in London?", "Hello, who are you?"):
        question = await speak(text)
        _, said = await caller.say(question)
        first_audio = await caller.agent_starts(said)
        await caller.agent_stops(said)
        # the caller's own view: from the end of its speech to the agent's first audio; never
        # under the endpointing silence wait (0.5 s)
        assert 0.5 < first_audio - (said - trailing_silence(question)) < 5.0
    turns = session.events("TurnCompleted")
    assert len(turns) == 2  # the greeting is not a turn
    for turn in turns:
        total = int(turn.extra["latency_ms"])
        assert 300 < total < 5000
    assert time.monotonic() - t0 < 120
    assert await shutdown(session, runner) == 0
