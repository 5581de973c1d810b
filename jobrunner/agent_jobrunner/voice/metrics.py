"""Per-turn latency: end of user speech → first agent audio frame, and each stage's share of it."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

# the stages in order; each runs from the previous mark to its own
STAGES = ("endpointing", "stt", "llm", "tts", "playout")


@dataclasses.dataclass
class TurnTimeline:
    """Monotonic timestamps (``time.monotonic()``) of one turn, filled in as it goes."""

    speech_ended: float | None = None  # the last voiced audio of the user (VAD's estimate)
    end_of_speech: float | None = None  # the VAD decided the user finished (after the silence wait)
    transcript: float | None = None  # STT returned the final transcript
    first_token: float | None = None  # the LLM's first text delta (after any tool calls)
    first_sentence: float | None = None  # the first sentence went to TTS
    first_audio: float | None = None  # TTS produced the first audio
    first_frame: float | None = None  # the first frame was handed to the room's audio source

    def metrics(self) -> TurnMetrics | None:
        """The turn's metrics once its first frame went out; None for a turn that never spoke."""
        marks = [
            self.speech_ended,
            self.end_of_speech,
            self.transcript,
            self.first_sentence,
            self.first_audio,
            self.first_frame,
        ]
        if any(mark is None for mark in marks):
            return None
        points = [m for m in marks if m is not None]
        stages = {name: max(0.0, b - a) for name, a, b in zip(STAGES, points[:-1], points[1:], strict=True)}
        ttft = (
            None
            if self.first_token is None or self.transcript is None
            else self.first_token - self.transcript
        )
        return TurnMetrics(total=points[-1] - points[0], stages=stages, llm_ttft=ttft)


@dataclasses.dataclass(frozen=True)
class TurnMetrics:
    total: float  # seconds from the end of user speech to the first agent audio frame
    stages: dict[str, float]  # seconds per stage (STAGES), adding up to ``total``
    llm_ttft: float | None = None  # transcript → first LLM token, within the llm stage

    def shares(self) -> dict[str, float]:
        if self.total <= 0:
            return dict.fromkeys(self.stages, 0.0)
        return {name: value / self.total for name, value in self.stages.items()}

    def as_log_extra(self) -> dict[str, str]:
        extra = {"latency_ms": f"{self.total * 1000:.0f}"}
        for name, value in self.stages.items():
            extra[f"{name}_ms"] = f"{value * 1000:.0f}"
        return extra


@dataclasses.dataclass(frozen=True)
class LatencySummary:
    turns: int
    median_total: float
    median_stages: dict[str, float]

    def report(self) -> str:
        lines = [
            f"turns: {self.turns}",
            f"median end of speech -> first agent audio: {self.median_total * 1000:.0f} ms",
        ]
        stage_sum = sum(self.median_stages.values()) or 1.0
        for name, value in self.median_stages.items():
            lines.append(f"  {name:<12} {value * 1000:7.0f} ms  {value / stage_sum:6.1%}")
        return "\n".join(lines)


def summarize(turns: Sequence[TurnMetrics]) -> LatencySummary:
    if not turns:
        raise ValueError("no turns to summarize")
    return LatencySummary(
        turns=len(turns),
        median_total=statistics.median(t.total for t in turns),
        median_stages={name: statistics.median(t.stages[name] for t in turns) for name in STAGES},
    )
