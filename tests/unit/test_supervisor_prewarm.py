"""A runner whose agent could not be prewarmed says so in its Hello: the supervisor (a real gRPC
server on loopback) reports it instead of an attached idle runner, counts it, and a job given
to that pod fails at once with the error, its room token never sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from livekit.protocol import agent, models
from prometheus_client import REGISTRY

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from tests.support.supervision import RecordedTerminations, RecordingListener

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

POD = PodIdentity("ns", "voice-pool-abc", "uid-prewarm")
ERROR = "the prewarm (setup_fnc) raised RuntimeError: the model file is missing"


def prewarm_failures() -> float:
    labels = {"namespace": "ns", "deployment": "voice"}
    return REGISTRY.get_sample_value("agent_operator_prewarm_failures_total", labels) or 0.0


class Accepts:
    async def authenticate(self, credential: str) -> PodIdentity:
        return POD


async def test_a_failed_prewarm_is_reported_and_a_job_for_the_pod_fails_without_its_token() -> None:
    listener = RecordingListener()
    terminator = RecordedTerminations()
    supervisor = Supervisor(Accepts(), terminator, listener=listener)
    port = await supervisor.start("127.0.0.1:0")
    deployment = DeploymentRef("ns", "voice")
    supervisor.expect(RunnerBinding(POD, deployment, HeartbeatSettings(start_timeout=3600)))
    before = prewarm_failures()
    outbox: asyncio.Queue[pb.RunnerMessage] = asyncio.Queue()
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        pod_namespace=POD.namespace,
        pod_name=POD.name,
        pod_uid=POD.uid,
        credential="accepted",
        state=pb.RUNNER_STATE_PREWARM_FAILED,
        prewarm_error=ERROR,
    )
    await outbox.put(pb.RunnerMessage(hello=hello))

    async def requests() -> AsyncIterator[pb.RunnerMessage]:
        while True:
            yield await outbox.get()

    received: list[pb.SupervisorMessage] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.RunnerSupervisorStub(channel).Attach(requests())

        async def read() -> None:
            async for message in call:
                received.append(message)

        reader = asyncio.create_task(read())
        try:
            event = await listener.wait_for("prewarm_failed", POD, timeout=20)
            assert event.detail == ERROR
            assert not [e for e in listener.events if e.kind == "attached"], "never counted an idle runner"
            assert supervisor.idle_runners() == []
            assert prewarm_failures() == before + 1

            job = agent.Job(id="J1", room=models.Room(name="r1"))
            request = pb.StartJobRequest(job=job.SerializeToString(), url="ws://x", token="room-token")
            await supervisor.assign(POD.uid, request)
            ended = await listener.wait_for("ended", POD, timeout=20)
            assert ended.detail.status is OutcomeStatus.FAILED
            assert ended.detail.reason == "prewarm failed"
            assert ended.detail.error == ERROR
            await asyncio.wait_for(terminator.called.wait(), 20)
            assert terminator.pods == [POD]
            # the reader task may not have taken the Welcome off the stream yet
            for _ in range(200):
                if received:
                    break
                await asyncio.sleep(0.05)
            kinds = [m.WhichOneof("message") for m in received]
            assert kinds[0] == "welcome"
            assert "start_job" not in kinds, "no StartJobRequest (and no room token) went out"
        finally:
            call.cancel()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await supervisor.stop()
