"""Sentences out of streamed text, the chat context, and per-turn metrics."""

from __future__ import annotations

import pytest

from agent_jobrunner.voice import ChatContext, ChatMessage, SentenceStream, split_sentences, summarize
from agent_jobrunner.voice.metrics import STAGES, TurnTimeline

pytestmark = pytest.mark.unit


def stream(text: str, piece: int) -> tuple[list[list[str]], list[str]]:
    """Push ``text`` in pieces; what came out after each push, and at the end."""
    sentences = SentenceStream()
    outs = [sentences.push(text[i : i + piece]) for i in range(0, len(text), piece)]
    return outs, sentences.flush()


def test_sentences_come_out_as_soon_as_they_end() -> None:
    sentences = SentenceStream()
    assert sentences.push("The weather in Paris") == []
    assert sentences.push(" is sunny.") == []  # the end is only sure at the next whitespace
    assert sentences.push(" Anything") == ["The weather in Paris is sunny."]
    assert sentences.push(" else I can do for you? Ask me!") == ["Anything else I can do for you?"]
    assert sentences.flush() == ["Ask me!"]
    assert sentences.flush() == []


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_any_chunking_gives_the_same_sentences(piece: int) -> None:
    text = (
        "Hello there, friend. Dr. Smith paid 3.5 dollars, i.e. a lot! Really?\nYes. The end is near now. Bye"
    )
    outs, rest = stream(text, piece)
    got = [s for out in outs for s in out] + rest
    assert got == [
        "Hello there, friend.",
        "Dr. Smith paid 3.5 dollars, i.e. a lot!",
        "Really? Yes. The end is near now.",  # short ones are joined to their neighbours
        "Bye",
    ]


def test_short_first_sentence_is_not_held_back_long() -> None:
    sentences = SentenceStream()
    assert sentences.push("Okay. Then") == []  # 5 characters: below the first minimum (8)
    assert sentences.push(" we go now. And") == ["Okay. Then we go now."]
    sentences = SentenceStream()
    assert sentences.push("Sure thing. Then") == ["Sure thing."]


def test_split_sentences_splits_everything() -> None:
    assert split_sentences("A. B! C") == ["A.", "B!", "C"]
    assert split_sentences("") == []


def test_chat_context() -> None:
    context = ChatContext.with_instructions("be brief")
    context.append(ChatMessage("user", "hi"))
    copy = context.copy()
    context.append(ChatMessage("assistant", "hel", interrupted=True))
    assert [m.role for m in context] == ["system", "user", "assistant"]
    assert len(copy) == 2  # a copy does not see later messages
    assert context.last("user") == ChatMessage("user", "hi", created_at=context.messages[1].created_at)
    last = context.last()
    assert last is not None
    assert last.interrupted
    assert len(ChatContext.with_instructions("")) == 0


def timeline(base: float, *gaps: float) -> TurnTimeline:
    marks = [base]
    for gap in gaps:
        marks.append(marks[-1] + gap)
    speech_ended, end_of_speech, transcript, first_sentence, first_audio, first_frame = marks
    return TurnTimeline(
        speech_ended=speech_ended,
        end_of_speech=end_of_speech,
        transcript=transcript,
        first_token=transcript + 0.01,
        first_sentence=first_sentence,
        first_audio=first_audio,
        first_frame=first_frame,
    )


def test_turn_metrics_stages_add_up() -> None:
    metrics = timeline(100.0, 0.5, 0.05, 0.02, 0.03, 0.1).metrics()
    assert metrics is not None
    assert metrics.total == pytest.approx(0.7)
    assert list(metrics.stages) == list(STAGES)
    assert [round(metrics.stages[s], 3) for s in STAGES] == [0.5, 0.05, 0.02, 0.03, 0.1]
    assert sum(metrics.shares().values()) == pytest.approx(1.0)
    assert metrics.shares()["endpointing"] == pytest.approx(0.5 / 0.7)
    assert metrics.llm_ttft == pytest.approx(0.01)
    extra = metrics.as_log_extra()
    assert extra["latency_ms"] == "700"
    assert extra["endpointing_ms"] == "500"


def test_turn_that_never_spoke_has_no_metrics() -> None:
    unfinished = timeline(0.0, 0.5, 0.05, 0.02, 0.03, 0.1)
    unfinished.first_frame = None
    assert unfinished.metrics() is None


def test_summary_is_the_median_per_stage() -> None:
    turns = [timeline(0, 0.5, s, 0.02, 0.03, 0.1).metrics() for s in (0.01, 0.05, 0.9)]
    summary = summarize([t for t in turns if t is not None])
    assert summary.turns == 3
    assert summary.median_stages["stt"] == pytest.approx(0.05)
    assert summary.median_total == pytest.approx(0.7)
    report = summary.report()
    assert "median end of speech -> first agent audio: 700 ms" in report
    assert "stt" in report
    with pytest.raises(ValueError, match="no turns"):
        summarize([])
