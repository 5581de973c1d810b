"""The supervisor (a real gRPC server on loopback, a scripted runner on a real stream) takes a
runner's checkpoints of its own running job only, and a running job whose pod's container
ended, or whose pod was deleted under it, ends at once as its runner's death (failover's
cause), not when the re-attach grace runs out. A started job's JOB_STATE_RUNNING is its room
joined, reported to the listener (the pool's refill waits for it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from livekit.protocol import agent, models
from prometheus_client import REGISTRY

from agent_jobrunner.protocol import MAX_CHECKPOINT_BYTES, PROTOCOL_VERSION, pb, pb_grpc
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    Supervisor,
)
from agent_operator.supervisor.types import DEATH_EXITED, DEATH_POD_DELETED
from tests.support.supervision import RecordedTerminations, RecordingListener

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

POD = PodIdentity("ns", "voice-j1-abc", "uid-ckpt")


def checkpoints(result: str) -> float:
    labels = {"namespace": "ns", "deployment": "voice", "result": result}
    return REGISTRY.get_sample_value("agent_operator_checkpoints_total", labels) or 0.0


class Accepts:
    async def authenticate(self, credential: str) -> PodIdentity:
        return POD


class ScriptedRunner:
    """One runner stream, its messages sent by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outbox: asyncio.Queue[pb.RunnerMessage] = asyncio.Queue()
        self.received: list[pb.SupervisorMessage] = []
        self.got = asyncio.Event()
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            pod_namespace=POD.namespace,
            pod_name=POD.name,
            pod_uid=POD.uid,
            credential="accepted",
            state=pb.RUNNER_STATE_IDLE,
        )
        self.outbox.put_nowait(pb.RunnerMessage(hello=hello))

    async def run(self) -> None:
        async def requests() -> AsyncIterator[pb.RunnerMessage]:
            while True:
                yield await self.outbox.get()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            async for message in pb_grpc.RunnerSupervisorStub(channel).Attach(requests()):
                self.received.append(message)
                self.got.set()

    async def wait_for(self, kind: str) -> pb.SupervisorMessage:
        for _ in range(400):
            found = [m for m in self.received if m.WhichOneof("message") == kind]
            if found:
                return found[0]
            self.got.clear()
            await asyncio.wait({asyncio.create_task(self.got.wait())}, timeout=0.05)
        raise AssertionError(f"no {kind} from the supervisor")

    def send(self, **message: object) -> None:
        self.outbox.put_nowait(pb.RunnerMessage(**message))  # type: ignore[arg-type]


async def started_job(
    supervisor: Supervisor, listener: RecordingListener
) -> tuple[ScriptedRunner, asyncio.Task[None]]:
    port = await supervisor.start("127.0.0.1:0")
    supervisor.expect(RunnerBinding(POD, DeploymentRef("ns", "voice"), HeartbeatSettings(start_timeout=3600)))
    runner = ScriptedRunner(port)
    task = asyncio.create_task(runner.run())
    await listener.wait_for("attached", POD, timeout=20)
    job = agent.Job(id="J1", room=models.Room(name="r1"))
    await supervisor.assign(POD.uid, pb.StartJobRequest(job=job.SerializeToString(), url="ws://x", token="t"))
    await runner.wait_for("start_job")
    runner.send(start_job_response=pb.StartJobResponse(job_id="J1"))
    await listener.wait_for("started", POD, timeout=20)
    return runner, task


async def stop(supervisor: Supervisor, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await supervisor.stop()


async def test_only_its_own_running_jobs_checkpoints_within_the_bound_are_taken() -> None:
    listener = RecordingListener()
    supervisor = Supervisor(Accepts(), RecordedTerminations(), listener=listener)
    runner, task = await started_job(supervisor, listener)
    before = {r: checkpoints(r) for r in ("taken", "not_its_job", "too_large", "not_json")}
    try:
        state = json.dumps({"runtime": "native", "turn": 1, "chat": []}).encode()
        runner.send(checkpoint=pb.Checkpoint(job_id="J-someone-else", seq=1, state=state))
        runner.send(checkpoint=pb.Checkpoint(job_id="J1", seq=2, state=b"x" * (MAX_CHECKPOINT_BYTES + 1)))
        runner.send(checkpoint=pb.Checkpoint(job_id="J1", seq=3, state=b"[1, 2]"))
        runner.send(checkpoint=pb.Checkpoint(job_id="J1", seq=4, state=state))
        taken = await listener.wait_for("checkpoint", POD, timeout=20)
        assert taken.detail.seq == 4  # the three before it were refused
        assert [e.detail.seq for e in listener.of("checkpoint")] == [4]
        assert checkpoints("taken") == before["taken"] + 1
        assert checkpoints("not_its_job") == before["not_its_job"] + 1
        assert checkpoints("too_large") == before["too_large"] + 1
        assert checkpoints("not_json") == before["not_json"] + 1
        assert supervisor.attached(POD.uid)  # a refused checkpoint does not end the stream
    finally:
        await stop(supervisor, task)


async def test_a_running_job_whose_container_ended_ends_at_once_as_its_runners_death() -> None:
    listener = RecordingListener()
    terminator = RecordedTerminations()
    supervisor = Supervisor(Accepts(), terminator, listener=listener)  # re-attach grace 15 s
    _, task = await started_job(supervisor, listener)
    try:
        task.cancel()  # the runner is gone: its stream breaks ...
        await listener.wait_for("detached", POD, timeout=20)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await supervisor.unit_exited(
            POD.uid, "exit code 137, Error", succeeded=False
        )  # ... and the kubelet says so
        ended = await listener.wait_for("ended", POD, timeout=20)
        assert loop.time() - t0 < 5, "ended by the container's exit, not the re-attach grace"
        assert ended.detail.status is OutcomeStatus.FAILED
        assert ended.detail.death == DEATH_EXITED
        assert "exit code 137" in ended.detail.error
    finally:
        await stop(supervisor, task)


async def test_a_running_job_whose_pod_is_deleted_under_it_ends_as_its_runners_death() -> None:
    listener = RecordingListener()
    supervisor = Supervisor(Accepts(), RecordedTerminations(), listener=listener)
    _, task = await started_job(supervisor, listener)
    try:
        await supervisor.forget(POD.uid)
        ended = await listener.wait_for("ended", POD, timeout=20)
        assert ended.detail.death == DEATH_POD_DELETED
    finally:
        await stop(supervisor, task)


async def test_a_job_asked_to_shut_down_is_no_death_when_its_pod_goes() -> None:
    listener = RecordingListener()
    supervisor = Supervisor(Accepts(), RecordedTerminations(), listener=listener)
    runner, task = await started_job(supervisor, listener)
    try:
        asking = asyncio.create_task(supervisor.shutdown_job(POD.uid, "drain", grace=30))
        await runner.wait_for("shutdown")
        await supervisor.forget(POD.uid)
        ended = await listener.wait_for("ended", POD, timeout=20)
        assert ended.detail.death == ""
        await asking
    finally:
        await stop(supervisor, task)


async def test_a_started_jobs_running_status_is_reported_as_its_room_joined_and_only_its_own() -> None:
    listener = RecordingListener()
    supervisor = Supervisor(Accepts(), RecordedTerminations(), listener=listener)
    runner, task = await started_job(supervisor, listener)
    try:
        runner.send(job_status=pb.JobStatus(job_id="J1", state=pb.JOB_STATE_CONNECTING))
        runner.send(job_status=pb.JobStatus(job_id="J-someone-else", state=pb.JOB_STATE_RUNNING))
        runner.send(job_status=pb.JobStatus(job_id="J1", state=pb.JOB_STATE_RUNNING))
        joined = await listener.wait_for("joined", POD, timeout=20)
        assert joined.detail.job_id == "J1"
        assert len(listener.of("joined")) == 1, "CONNECTING and another job's RUNNING are no join"
        assert listener.of("ended") == []
    finally:
        await stop(supervisor, task)
