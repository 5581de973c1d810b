"""The chat context's bound (issue 14, defect 14: it grew without bound, so a long call
overflowed the model's window): oldest whole turns go first, the instructions always stay."""

from __future__ import annotations

from typing import Any, cast

import pytest

from agent_jobrunner.voice import (
    LLM,
    STT,
    TTS,
    VAD,
    ChatContext,
    ChatMessage,
    ContextLimits,
    PipelineOptions,
    ToolCall,
    VoicePipeline,
)

pytestmark = pytest.mark.unit


def talk(context: ChatContext, turns: int, words: str = "hello") -> None:
    for i in range(turns):
        context.append(ChatMessage("user", f"{words} {i}"))
        context.append(ChatMessage("assistant", f"answer {i}"))


def test_an_unbounded_context_keeps_everything() -> None:
    context = ChatContext.with_instructions("be brief")
    talk(context, 500)
    assert len(context) == 1 + 2 * 500


def test_the_oldest_turns_go_and_the_instructions_stay() -> None:
    context = ChatContext.with_instructions("be brief")
    context.limit(ContextLimits(max_turns=3))
    talk(context, 10)
    assert [m.content for m in context] == [
        "be brief",
        "hello 7",
        "answer 7",
        "hello 8",
        "answer 8",
        "hello 9",
        "answer 9",
    ]
    assert context.messages[0].role == "system"


def test_the_character_bound_counts_message_text_but_not_the_instructions() -> None:
    context = ChatContext([ChatMessage("system", "x" * 1000)], ContextLimits(max_chars=100))
    for i in range(20):
        context.append(ChatMessage("user", f"{i:02d}" + "u" * 18))  # 20 characters
        context.append(ChatMessage("assistant", "a" * 20))
    kept = [m for m in context if m.role != "system"]
    assert sum(len(m.content) for m in kept) <= 100
    assert len(kept) == 4  # two whole turns of 40 characters; a third would make 120
    assert kept[0].content.startswith("18")
    assert context.messages[0].content == "x" * 1000


def test_a_tool_round_goes_with_its_turn_never_half() -> None:
    """An assistant's tool call and the tool's result are dropped together with the user
    message that started the turn: the model never sees a result without its call."""
    context = ChatContext.with_instructions("use tools")
    context.limit(ContextLimits(max_turns=1))
    call = ToolCall("call_1", "get_weather", '{"city": "paris"}')
    context.append(ChatMessage("user", "weather in paris?"))
    context.append(ChatMessage("assistant", tool_calls=(call,)))
    context.append(ChatMessage("tool", "sunny", tool_call_id="call_1", name="get_weather"))
    context.append(ChatMessage("assistant", "It is sunny."))
    assert len(context) == 5, "the newest turn is never cut, tool round included"
    context.append(ChatMessage("user", "thanks"))
    assert [(m.role, m.content) for m in context] == [("system", "use tools"), ("user", "thanks")]


def test_the_newest_turn_stays_even_when_it_alone_is_over_the_bound() -> None:
    context = ChatContext(limits=ContextLimits(max_chars=10))
    context.append(ChatMessage("user", "short"))
    context.append(ChatMessage("user", "a very long question indeed"))
    assert [m.content for m in context] == ["a very long question indeed"]


def test_a_greeting_before_the_first_user_message_is_a_turn_of_its_own() -> None:
    context = ChatContext.with_instructions("greet")
    context.limit(ContextLimits(max_turns=1))
    context.append(ChatMessage("assistant", "Hi, how can I help?"))
    context.append(ChatMessage("user", "hello"))
    assert [m.content for m in context] == ["greet", "hello"]


def test_a_copy_keeps_the_bound() -> None:
    context = ChatContext(limits=ContextLimits(max_turns=1))
    copy = context.copy()
    talk(copy, 3)
    assert [m.content for m in copy] == ["hello 2", "answer 2"]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_turns must be at least 1"):
        ContextLimits(max_turns=0)
    with pytest.raises(ValueError, match="max_chars must be at least 1"):
        ContextLimits(max_chars=-5)


class _Rate:
    sample_rate = 16_000


def test_the_pipeline_bounds_its_context_by_its_options() -> None:
    parts: dict[str, Any] = {"vad": cast(VAD, _Rate()), "stt": cast(STT, _Rate())}
    parts |= {"llm": cast(LLM, object()), "tts": cast(TTS, object())}
    pipeline = VoicePipeline(
        **parts, instructions="be brief", options=PipelineOptions(max_context_turns=2, max_context_chars=500)
    )
    assert pipeline.chat_context.limits == ContextLimits(max_turns=2, max_chars=500)
    talk(pipeline.chat_context, 5)
    assert pipeline.chat_context.messages[0].content == "be brief"
    assert len(pipeline.chat_context) == 1 + 2 * 2
    default = VoicePipeline(**parts)
    assert default.chat_context.limits == ContextLimits(max_turns=50, max_chars=40_000)
