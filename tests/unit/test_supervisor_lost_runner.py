"""A running job whose runner process is killed (SIGKILL: its socket closed by the kernel) is
judged dead soon after, when its deployment has failover on (``RunnerBinding.lost_after``),
not after the re-attach grace, and its pod is left for the kubelet to tell why it died; a
runner whose connection only broke and that attaches again keeps its job. A real gRPC server
on loopback, the runner a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from agent_operator.supervisor import Supervisor, SupervisorSettings
from agent_operator.supervisor.types import (
    DEATH_LOST,
    DeploymentRef,
    HeartbeatSettings,
    JobState,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
)
from devenv.environment import REPO_ROOT
from tests.support.supervision import RecordedTerminations, RecordingListener
from tests.unit.test_supervisor_checkpoints import Accepts

pytestmark = [pytest.mark.unit, pytest.mark.timeout(90)]

POD = PodIdentity("ns", "voice-j1-abc", "uid-ckpt")  # the pod Accepts proves
POD_ARGS = [POD.namespace, POD.name, POD.uid]
GRACE = 30.0  # the re-attach grace: far longer than any wait here


class RunnerProcess:
    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.stream_runner",
                str(port),
                POD.namespace,
                POD.name,
                POD.uid,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )

    async def said(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line.decode().strip() == word, line

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def running(
    lost_after: float | None,
) -> AsyncIterator[tuple[Supervisor, RecordingListener, RecordedTerminations, RunnerProcess]]:
    listener, terminator = RecordingListener(), RecordedTerminations()
    supervisor = Supervisor(Accepts(), terminator, listener, SupervisorSettings(reattach_grace=GRACE))
    port = await supervisor.start("127.0.0.1:0")
    binding = RunnerBinding(POD, DeploymentRef("ns", "voice"), HeartbeatSettings(), lost_after=lost_after)
    supervisor.expect(binding)
    runner = RunnerProcess(port)
    try:
        from livekit.protocol import agent, models

        from agent_jobrunner.protocol import pb

        await listener.wait_for("attached", POD, timeout=30)
        job = agent.Job(id="J1", room=models.Room(name="r1"))
        await supervisor.assign(
            POD.uid, pb.StartJobRequest(job=job.SerializeToString(), url="ws://x", token="t")
        )
        await runner.said("running")
        await listener.wait_for("started", POD, timeout=30)
        yield supervisor, listener, terminator, runner
    finally:
        runner.close()
        await supervisor.stop()


async def test_a_killed_runner_is_judged_lost_soon_and_its_pod_left_for_the_kubelet() -> None:
    async for _, listener, terminator, runner in running(lost_after=1.0):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        runner.proc.kill()
        ended = await listener.wait_for("ended", POD, timeout=GRACE / 2)
        elapsed = loop.time() - t0
        assert 1.0 <= elapsed < GRACE / 2, elapsed
        assert ended.detail.status is OutcomeStatus.FAILED
        assert ended.detail.death == DEATH_LOST
        assert "no re-attach within 1.0s" in ended.detail.error
        await asyncio.sleep(0.2)
        assert terminator.pods == [], "the pod is left for the kubelet to tell why it died"


async def test_without_lost_after_a_killed_runner_gets_the_re_attach_grace() -> None:
    async for supervisor, listener, _, runner in running(lost_after=None):
        runner.proc.kill()
        await listener.wait_for("detached", POD, timeout=30)
        await asyncio.sleep(3.0)
        assert listener.of("ended") == []
        record = supervisor.job(POD.uid)
        assert record is not None
        assert record.state is JobState.RUNNING


async def test_a_runner_whose_connection_broke_and_that_attaches_again_keeps_its_job() -> None:
    async for supervisor, listener, _, runner in running(lost_after=1.0):
        runner.tell("drop")
        await runner.said("again")
        await asyncio.sleep(3.0)  # past lost_after
        assert listener.of("ended") == []
        assert supervisor.attached(POD.uid)
        assert len(listener.of("detached")) == 1
