"""Voice turn latency: end of user speech → first agent audio frame, median over N turns.

    devenv/netns-run python -m tests.bench.voice_latency [--turns 10]

Starts a real livekit-server, the runner as a real process with the offline example agent
(Silero VAD, PocketSphinx, rule-based LLM, espeak-ng) and a caller that asks questions with
espeak-ng speech. Reports two views of each turn:

- the pipeline's own metrics (from the agent's log records): from the last voiced audio the
  VAD saw to the first frame handed to the room, split into endpointing (the silence wait),
  STT, LLM, TTS and playout;
- the caller's view: from the last frame of its question leaving its microphone to the first
  loud frame of the agent's answer arriving (adds both network legs and jitter buffers).

A turn that fails prints the failure, never a number. Results also go to
``.test-logs/bench-voice-latency.json``.
"""

from __future__ import annotations

import argparse
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path

from agent_jobrunner.protocol import pb
from agent_jobrunner.voice.metrics import STAGES
from devenv import binaries
from devenv.caller import Caller
from devenv.livekit import LocalLiveKit
from devenv.speech import speak, trailing_silence
from tests.bench.figures import run_in_tempdir, write_json
from tests.support.scripted_supervisor import RunnerProcess, Session, SupervisorServer
from tests.voicekit.supervisor import VOICE_AGENT, shutdown, start_job

QUESTIONS = ("What is the weather in Paris?", "Hello, who are you?", "What is the weather in London?")


def answered(session: Session, turn: int) -> Callable[[pb.LogRecord], bool]:
    return lambda _: len(session.events("TurnCompleted")) > turn


async def run(turns: int, workdir: Path) -> dict[str, object]:
    binaries.ensure_all(["livekit-server"])
    server = LocalLiveKit(workdir / "livekit")
    livekit = server.start()
    supervisor = SupervisorServer()
    await supervisor.start()
    caller = Caller()
    runner = RunnerProcess(workdir, supervisor.port, VOICE_AGENT)
    try:
        room = f"bench-{uuid.uuid4().hex[:8]}"
        await caller.join(livekit, room)
        await runner.start()
        session = await supervisor.servicer.session()
        start_job(session, livekit, room)
        await session.expect_log(lambda r: r.message == "voice agent ready", what="the agent getting ready")
        await caller.wait_agent_track()
        questions = {text: await speak(text) for text in QUESTIONS}
        observed: list[float] = []
        for turn in range(turns):
            text = QUESTIONS[turn % len(QUESTIONS)]
            _, said = await caller.say(questions[text])
            first = await caller.agent_starts(said)
            await caller.agent_stops(said)
            await session.expect_event("TurnCompleted", answered(session, turn))
            # from the question's last voiced frame (its WAV ends in espeak-ng's own trailing silence)
            observed.append(first - (said - trailing_silence(questions[text])))
            print(f"turn {turn + 1:2d}: {text:<32} caller-observed {observed[-1] * 1000:5.0f} ms", flush=True)
        records = session.events("TurnCompleted")
        pipeline = [
            {k: int(r.extra[f"{k}_ms"]) for k in STAGES} | {"total": int(r.extra["latency_ms"])}
            for r in records
        ]
        assert await shutdown(session, runner) == 0
    finally:
        await caller.leave()
        await runner.kill()
        await supervisor.stop()
        server.stop()
    median = {k: statistics.median(t[k] for t in pipeline) for k in (*STAGES, "total")}
    return {
        "turns": len(pipeline),
        "pipeline_ms": pipeline,
        "median_ms": median,
        "caller_observed_ms": [round(o * 1000) for o in observed],
        "caller_observed_median_ms": round(statistics.median(observed) * 1000),
    }


def report(result: dict[str, object]) -> str:
    median = result["median_ms"]
    assert isinstance(median, dict)
    stage_sum = sum(median[k] for k in STAGES) or 1
    lines = [
        f"turns: {result['turns']}",
        f"median end of user speech -> first agent audio frame (pipeline): {median['total']:.0f} ms",
    ]
    for name in STAGES:
        lines.append(f"  {name:<12} {median[name]:6.0f} ms  {median[name] / stage_sum:6.1%}")
    lines.append(
        "median from the end of the caller's speech to the first agent audio it receives "
        f"(network legs and jitter buffers included): {result['caller_observed_median_ms']} ms"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    result = run_in_tempdir(
        "voice-bench-", lambda folder: run(args.turns, folder), 60 + 30 * args.turns, "voice latency"
    )
    if result is None:
        return 1
    print(report(result))
    write_json("bench-voice-latency", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
