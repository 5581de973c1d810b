"""Voice turn latency of a livekit-agents AgentSession with the offline plugins, in a runner.

    devenv/netns-run .venv/bin/python -m tests.bench.lka_voice_latency [--turns 12]

The example agent (``jobrunner/examples/weather-agent``: Silero VAD, PocketSphinx STT, the rule
LLM with its ``get_weather`` tool, espeak-ng TTS) runs in the runner with ``runtime:
livekit-agents`` against a real livekit-server; a caller asks questions in espeak-ng speech,
one at a time, waiting for each answer. The first turn of the call is printed on its own and
left out of the percentiles (it pays for the first use of each plugin). Two views of a turn:

- livekit-agents' own per-turn metrics (``ChatMessage.metrics``, which the example logs on
  each conversation item): ``e2e_latency``, the end of the user's speech (as its VAD saw it)
  to the agent starting to speak, and its stages: ``end_of_turn_delay`` (the end of speech to
  the end-of-turn decision; the transcript's wait, ``transcription_delay``, is inside it),
  ``on_user_turn_completed_delay``, ``llm_node_ttft`` and ``tts_node_ttfb``. A turn with a
  tool call runs the LLM twice; its ``llm_node_ttft`` is the reply's;
- the caller's: its question's last voiced frame leaving its microphone to the first loud
  frame of the answer arriving (both network legs and jitter buffers included).

A turn that fails is counted and named, never given a number. Results also go to
``.test-logs/bench-lka-voice-latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from pathlib import Path
from typing import Any

from agent_jobrunner.protocol import pb
from devenv import binaries
from devenv.caller import Caller
from devenv.livekit import LocalLiveKit
from devenv.speech import speak, trailing_silence
from tests.bench.figures import Series, header, load_average, machine, row, run_in_tempdir, write_json
from tests.support.lka_worker import EXAMPLE_PATH
from tests.support.scripted_supervisor import RunnerProcess, Session, SupervisorServer, start_request
from tests.voicekit.supervisor import shutdown

QUESTIONS = ("What is the weather in Paris?", "Hello, who are you?", "What is the weather in London?")
USER_STAGES = ("end_of_turn_delay", "transcription_delay", "on_user_turn_completed_delay")
AGENT_STAGES = ("llm_node_ttft", "tts_node_ttfb")
TURN_TIMEOUT = 90.0


def items(session: Session, role: str) -> list[pb.LogRecord]:
    return [
        r for r in session.logs() if r.message == "conversation item added" and r.extra.get("role") == role
    ]


def metric(record: pb.LogRecord, name: str) -> float | None:
    value = record.extra.get(f"metric_{name}")
    return float(value) if value is not None else None


async def one_turn(caller: Caller, session: Session, question: Any, answered: int) -> tuple[float, float]:
    """(caller-observed latency, the turn's e2e_latency) once the agent's answer is logged."""
    _, said = await caller.say(question)
    first = await caller.agent_starts(said, TURN_TIMEOUT)
    await caller.agent_stops(said, timeout=TURN_TIMEOUT)

    def logged(_: pb.LogRecord) -> bool:
        return sum(1 for r in items(session, "assistant") if metric(r, "e2e_latency") is not None) > answered

    await session.expect_log(logged, TURN_TIMEOUT, "the answer's conversation item with its e2e_latency")
    reply = [r for r in items(session, "assistant") if metric(r, "e2e_latency") is not None][answered]
    e2e = metric(reply, "e2e_latency")
    assert e2e is not None
    return first - (said - trailing_silence(question)), e2e


async def run(turns: int, workdir: Path) -> dict[str, Any]:
    binaries.ensure_all(["livekit-server"])
    server = LocalLiveKit(workdir / "livekit")
    livekit = server.start()
    supervisor = SupervisorServer()
    await supervisor.start()
    caller = Caller()
    lka = {"AGENT_RUNTIME": "livekit-agents", "PYTHONPATH": EXAMPLE_PATH}
    runner = RunnerProcess(workdir, supervisor.port, "agent:server", lka)
    observed, e2e = Series(), Series()
    per_question: dict[str, list[float]] = {q: [] for q in QUESTIONS}
    first_turn: dict[str, float] = {}
    answered = 0
    try:
        await runner.start()
        session = await supervisor.servicer.session(timeout=120)
        await session.expect_log("prewarmed the agent (setup_fnc)", 120)
        room = f"bench-{uuid.uuid4().hex[:8]}"
        await caller.join(livekit, room)
        request, _ = start_request(livekit, room, agent_name="weather-agent")
        session.send(pb.SupervisorMessage(start_job=request))
        await session.expect_log("weather agent ready", 120)
        await caller.wait_agent_track(120)
        questions = {text: await speak(text) for text in QUESTIONS}
        for turn in range(turns + 1):
            text = QUESTIONS[turn % len(QUESTIONS)]
            if turn:
                observed.sample_load()
            try:
                seen, latency = await one_turn(caller, session, questions[text], answered)
            except (AssertionError, TimeoutError) as err:
                observed.fail(f"turn {turn + 1}: {err}")
                print(f"turn {turn + 1:2d}: {text:<32} FAILED: {err}", flush=True)
                continue
            answered += 1
            if not turn:
                first_turn = {
                    "e2e_latency_ms": round(latency * 1000),
                    "caller_observed_ms": round(seen * 1000),
                }
            else:
                observed.add(seen)
                e2e.add(latency)
                per_question[text].append(latency)
            print(
                f"turn {turn + 1:2d}: {text:<32} e2e_latency {latency * 1000:5.0f} ms, "
                f"caller-observed {seen * 1000:5.0f} ms (load {load_average():.1f})",
                flush=True,
            )
            await asyncio.sleep(1.0)
        # the stages of the turns in the percentiles (the first left out, as above)
        users = [r for r in items(session, "user") if metric(r, "end_of_turn_delay") is not None][1:]
        replies = [r for r in items(session, "assistant") if metric(r, "e2e_latency") is not None][1:]
        stages: dict[str, list[float]] = {
            **{s: [v for r in users if (v := metric(r, s)) is not None] for s in USER_STAGES},
            **{s: [v for r in replies if (v := metric(r, s)) is not None] for s in AGENT_STAGES},
        }
        await shutdown(session, runner)
    finally:
        await caller.leave()
        await runner.kill()
        await supervisor.stop()
        server.stop()
    e2e.load, e2e.failures = observed.load, observed.failures
    return {
        "machine": machine(),
        "turns": turns,
        "first_turn": first_turn,
        "e2e_latency": e2e.summary(),
        "caller_observed": observed.summary(),
        "stages_median_ms": {s: round(statistics.median(v) * 1000) for s, v in stages.items() if v},
        "stages_n": {s: len(v) for s, v in stages.items()},
        "e2e_median_ms_by_question": {
            q: round(statistics.median(v) * 1000) for q, v in per_question.items() if v
        },
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"livekit-agents AgentSession, offline plugins ({result['machine']}): {result['turns']} turns",
        header(),
        row("e2e_latency (livekit-agents' metric)", result["e2e_latency"]),
        row("caller-observed (network and jitter buffers in)", result["caller_observed"]),
        f"the call's first turn (not in the rows above): {result['first_turn']}",
    ]
    total = result["e2e_latency"].get("p50_ms") or 1
    lines.append("stages, median (share of the median e2e_latency):")
    for stage, value in result["stages_median_ms"].items():
        inside = "  (inside end_of_turn_delay)" if stage == "transcription_delay" else ""
        lines.append(f"  {stage:<30} {value:6} ms  {value / total:6.1%}{inside}")
    counted = sum(v for s, v in result["stages_median_ms"].items() if s != "transcription_delay")
    rest = total - counted
    lines.append(f"  {'rest (playout, tool call, queues)':<30} {rest:6.0f} ms  {rest / total:6.1%}")
    for question, value in result["e2e_median_ms_by_question"].items():
        lines.append(f"  median e2e_latency for {question!r}: {value} ms")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=12)
    args = parser.parse_args()
    result = run_in_tempdir(
        "lka-voice-bench-",
        lambda folder: run(args.turns, folder),
        300 + 60 * args.turns,
        "livekit-agents voice latency",
    )
    if result is None:
        return 1
    print(report(result))
    write_json("bench-lka-voice-latency", result)
    return 1 if result["e2e_latency"]["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
