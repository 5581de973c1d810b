"""The voice tests' side of the scripted supervisor: the example voice agent, one job for it."""

from __future__ import annotations

import uuid

from livekit.protocol import agent as lk_agent
from livekit.protocol import models

from agent_jobrunner.protocol import pb
from tests.support.scripted_supervisor import RunnerProcess, Session, room_token
from tests.testenv.livekit import LiveKitAccess

VOICE_AGENT = "agent_jobrunner.examples.voice:entrypoint"


def start_job(session: Session, livekit: LiveKitAccess, room: str) -> lk_agent.Job:
    job = lk_agent.Job(
        id=f"AJ_{uuid.uuid4().hex[:10]}",
        type=lk_agent.JT_ROOM,
        room=models.Room(name=room),
        agent_name="voice",
    )
    identity = f"agent-{job.id}"
    request = pb.StartJobRequest(
        job=job.SerializeToString(),
        url=livekit.url,
        token=room_token(livekit, room, identity, agent=True),
        participant_identity=identity,
        participant_name="Voice Agent",
        auto_subscribe=pb.AUTO_SUBSCRIBE_AUDIO_ONLY,
    )
    session.send(pb.SupervisorMessage(start_job=request))
    return job


async def shutdown(session: Session, runner: RunnerProcess) -> int:
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="test done", grace_ms=10_000)))
    return await runner.wait(30)
