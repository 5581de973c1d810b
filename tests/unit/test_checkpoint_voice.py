"""The native voice pipeline checkpoints and restores its conversation by itself (issue 15): in a
job, every change of its chat context is a checkpoint; in a restarted job it starts with the
restored conversation after its own instructions, and the rule model can tell."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest
from livekit import rtc

from agent_jobrunner import job as job_module
from agent_jobrunner.checkpoint import MAX_CHECKPOINT_BYTES, Checkpointer, encode_state
from agent_jobrunner.job import JobContext
from agent_jobrunner.protocol import pb
from agent_jobrunner.voice import (
    STT,
    TTS,
    VAD,
    ChatContext,
    ChatMessage,
    PipelineOptions,
    ToolCall,
    VoicePipeline,
    function_tool,
)
from agent_jobrunner.voice.persist import chat_state, restored_chat
from agent_jobrunner.voice.pipeline import _settled
from agent_jobrunner.voice.playout import AudioOutput
from agent_jobrunner.voice.providers.espeak import EspeakTTS
from agent_jobrunner.voice.providers.pocketsphinx import PocketSphinxSTT
from agent_jobrunner.voice.providers.rules import RuleBasedLLM
from agent_jobrunner.voice.reply import Reply
from tests.support.deployment_fakes import job as lk_job
from tests.unit.test_voice_offline import padded, spoken

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

T = TypeVar("T")
INSTRUCTIONS = "You are a friendly voice agent."


class Sink:
    """The link's side of the checkpointer (the stream is not under test here)."""

    def __init__(self) -> None:
        self.sent: list[pb.RunnerMessage] = []

    def send_checkpoint(self, message: pb.RunnerMessage) -> None:
        self.sent.append(message)

    @property
    def states(self) -> list[dict[str, Any]]:
        return [json.loads(m.checkpoint.state) for m in self.sent]


def job_context(sink: Sink, restored: dict[str, Any] | None = None, restarts: int = 0) -> JobContext:
    """A job's context as the runner makes it (call it with the event loop running: ``rtc.Room``)."""
    return JobContext(
        job=lk_job("AJ_voice"),
        room=rtc.Room(),
        url="ws://127.0.0.1:1",
        participant_identity="agent",
        participant_name="agent",
        participant_metadata="",
        participant_attributes={},
        on_shutdown=lambda reason: None,
        restored=restored,
        restarts=restarts,
        checkpointer=Checkpointer("AJ_voice", sink, restored_seq=10 if restored else 0),
    )


def in_job(ctx: JobContext, make: Callable[[], T]) -> T:
    """``make()`` as the job's entrypoint runs it: with the job's context current."""
    context = contextvars.copy_context()
    context.run(job_module._current.set, ctx)
    return context.run(make)


class _Rate:
    sample_rate = 16_000  # the VAD and STT the pipeline checks; no audio comes in these tests


def pipeline(**parts: Any) -> VoicePipeline:
    return VoicePipeline(
        vad=cast(VAD, _Rate()),
        stt=cast(STT, _Rate()),
        llm=parts.pop("llm", RuleBasedLLM()),
        tts=parts.pop("tts", cast(TTS, object())),
        instructions=INSTRUCTIONS,
        **parts,
    )


def roles(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in state["chat"]]


CALL = ToolCall("call_1", "get_weather", '{"city": "paris"}')
CONVERSATION = [
    ChatMessage("user", "what is the weather in paris"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", "sunny and warm", tool_call_id="call_1", name="get_weather"),
    ChatMessage("assistant", "The weather in paris is sunny and warm."),
    ChatMessage("user", "please tell me a long story"),
    ChatMessage("assistant", "Once upon a time there was", interrupted=True),
]


def test_a_chat_context_round_trips_through_json() -> None:
    context = ChatContext([ChatMessage("system", INSTRUCTIONS), *CONVERSATION])
    data = json.loads(encode_state(chat_state(context.messages, 2)))
    restored = restored_chat(data)
    assert restored is not None
    assert restored.turn == 2
    assert restored.messages == context.messages  # role, content, calls, results, interrupted, times


def test_a_chat_over_the_bound_loses_its_oldest_messages_not_its_instructions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long = [ChatMessage("user" if i % 2 == 0 else "assistant", f"{i} " + "x" * 1000) for i in range(60)]
    messages = [ChatMessage("system", INSTRUCTIONS), *CONVERSATION[:4], *long]
    with caplog.at_level(logging.DEBUG, logger="agent_jobrunner.voice.persist"):
        state = chat_state(messages, 33)
    size = len(encode_state(state))
    assert MAX_CHECKPOINT_BYTES - 1100 < size <= MAX_CHECKPOINT_BYTES
    assert state["chat"][0] == {
        "role": "system",
        "content": INSTRUCTIONS,
        "created_at": messages[0].created_at,
    }
    assert state["chat"][-1]["content"] == long[-1].content  # the newest stay
    assert "dropped its" in caplog.text


def test_a_tool_result_whose_call_was_dropped_goes_too() -> None:
    messages = [ChatMessage("system", INSTRUCTIONS), *CONVERSATION[:4]]
    full = len(encode_state(chat_state(messages, 1)))
    call_size = len(encode_state(messages[1].to_dict())) + len(encode_state(messages[2].to_dict()))
    state = chat_state(messages, 1, limit=full - call_size + 10)  # room without the first two
    assert [m["role"] for m in state["chat"]] == ["system", "assistant"]


async def test_every_change_of_the_chat_context_in_a_job_is_a_checkpoint() -> None:
    sink = Sink()
    voice = in_job(job_context(sink), pipeline)
    for message in CONVERSATION:
        voice.chat_context.append(message)
    assert len(sink.sent) == len(CONVERSATION)
    assert [m.checkpoint.seq for m in sink.sent] == [1, 2, 3, 4, 5, 6]
    last = sink.states[-1]
    assert (last["runtime"], last["turn"]) == ("native", 2)
    assert roles(last)[0] == ("system", INSTRUCTIONS)
    assert last["chat"][2]["tool_calls"] == [
        {"id": "call_1", "name": "get_weather", "arguments": CALL.arguments}
    ]
    assert last["chat"][3]["tool_call_id"] == "call_1"
    assert last["chat"][-1]["interrupted"] is True
    assert [s["turn"] for s in sink.states] == [1, 1, 1, 1, 2, 2]


def test_outside_a_job_nothing_is_checkpointed_and_the_turns_still_count() -> None:
    voice = pipeline()
    for message in CONVERSATION:
        voice.chat_context.append(message)
    assert voice.turn_index == 2


def restored_state(turn: int = 2) -> dict[str, Any]:
    old = ChatContext([ChatMessage("system", "old instructions"), *CONVERSATION])
    state: dict[str, Any] = json.loads(encode_state(chat_state(old.messages, turn)))
    return state


async def test_a_pipeline_in_a_restarted_job_starts_with_the_restored_conversation() -> None:
    sink = Sink()
    voice = in_job(job_context(sink, restored_state(), restarts=1), pipeline)
    messages = voice.chat_context.messages
    assert messages[0] == ChatMessage("system", INSTRUCTIONS, created_at=messages[0].created_at)
    assert [m.content for m in messages if m.role == "system"] == [INSTRUCTIONS]  # the code's win
    assert messages[1:] == CONVERSATION
    assert voice.turn_index == 2
    assert sink.sent == []  # nothing new to say yet
    voice.chat_context.append(ChatMessage("user", "hello there"))
    assert (sink.sent[-1].checkpoint.seq, sink.states[-1]["turn"]) == (11, 3)
    assert len(sink.states[-1]["chat"]) == 1 + len(CONVERSATION) + 1


async def test_the_restored_conversation_is_bounded_like_the_pipelines_own() -> None:
    voice = in_job(
        job_context(Sink(), restored_state()), lambda: pipeline(options=PipelineOptions(max_context_turns=1))
    )
    assert [m.role for m in voice.chat_context] == ["system", "user", "assistant"]


@pytest.mark.parametrize(
    "state",
    [
        {"runtime": "livekit-agents", "chat": {"items": []}},
        {"runtime": "native", "chat": "garbled"},
        {"something": "else"},
    ],
)
async def test_a_restored_state_that_is_not_a_native_chat_is_left_alone(state: dict[str, Any]) -> None:
    voice = in_job(job_context(Sink(), state), pipeline)
    assert [m.role for m in voice.chat_context] == ["system"]
    assert voice.turn_index == 0


def test_a_malformed_restored_message_is_skipped() -> None:
    state = restored_state()
    state["chat"][1:1] = [
        {"role": "wizard", "content": "x"},
        "not an object",
        {"role": "user", "tool_calls": [1]},
    ]
    restored = restored_chat(state)
    assert restored is not None
    assert restored.messages[1:] == CONVERSATION


@function_tool
async def get_weather(city: str) -> str:
    """The weather."""
    return "sunny and warm"


async def test_the_rule_model_answers_what_was_asked_first_from_the_restored_conversation() -> None:
    """A real reply (rules → espeak-ng → playout) in a restarted job, as after a failover."""
    sink = Sink()
    tts = EspeakTTS(words_per_minute=400)
    voice = in_job(job_context(sink, restored_state()), lambda: pipeline(tts=tts, tools=[get_weather]))
    voice._output = AudioOutput(queue_ms=100)  # what start(room) publishes; no room here
    try:
        voice.chat_context.append(ChatMessage("user", "what did i ask first"))
        task = await voice._begin_reply(Reply(**voice._reply_parts()))
        await _settled(task)
    finally:
        await voice._output.aclose()
    answer = voice.chat_context.last("assistant")
    assert answer is not None
    assert answer.content == "You first asked: what is the weather in paris."
    assert not answer.interrupted
    assert roles(sink.states[-1])[-2:] == [("user", "what did i ask first"), ("assistant", answer.content)]
    assert sink.states[-1]["turn"] == 3


async def test_the_rule_model_before_any_earlier_question() -> None:
    context = ChatContext([ChatMessage("user", "what did i ask first")])
    reply = "".join([getattr(c, "text", "") async for c in RuleBasedLLM().chat(context, [])])
    assert reply == "You have not asked me anything yet."


async def test_pocketsphinx_knows_the_question() -> None:
    phrases = RuleBasedLLM().phrases()
    assert "what did i ask first" in phrases
    stt = await PocketSphinxSTT.load(phrases)
    try:
        transcript = await stt.recognize(padded(await spoken("what did i ask first"), 0.3, 0.3))
    finally:
        await stt.aclose()
    assert transcript.text == "what did i ask first"
