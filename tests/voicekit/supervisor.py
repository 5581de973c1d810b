"""The voice tests' side of the scripted supervisor: the example voice agent, one job for it."""

from __future__ import annotations

from livekit.protocol import agent as lk_agent

from agent_jobrunner.protocol import pb
from devenv.livekit import LiveKitAccess
from tests.support.scripted_supervisor import RunnerProcess, Session, start_request

VOICE_AGENT = "agent_jobrunner.examples.voice:entrypoint"


def start_job(session: Session, livekit: LiveKitAccess, room: str) -> lk_agent.Job:
    request, job = start_request(
        livekit,
        room,
        auto_subscribe=pb.AUTO_SUBSCRIBE_AUDIO_ONLY,
        agent_name="voice",
        participant_name="Voice Agent",
        metadata="",
        attributes={},
    )
    session.send(pb.SupervisorMessage(start_job=request))
    return job


async def shutdown(session: Session, runner: RunnerProcess, timeout: float = 30) -> int:
    """Asks the runner to shut down (the test is done); its exit code."""
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="test done", grace_ms=10_000)))
    return await runner.wait(timeout)
