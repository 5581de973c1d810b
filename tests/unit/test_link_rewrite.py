"""A message the runner was writing when the operator ended the stream (a handover: the old
operator finishes its streams) is not lost, and the stream's end is not an error.

Found in the fresh-clone CI run of 2026-12-02: a runner logged "unexpected error on the
operator stream ... InvalidStateError: RPC already finished" at ERROR during
``test_a_deploy_hands_over_without_dropping_a_dispatch[warm]``, and the message it was
writing was dropped (it had been taken off the queue)."""

from __future__ import annotations

import asyncio

import pytest

from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.link import OperatorLink, StreamFinished
from agent_jobrunner.logforward import LogBuffer
from agent_jobrunner.protocol import pb

pytestmark = pytest.mark.unit


class FinishedCall:
    """A stream the operator has already ended: grpc.aio refuses every write."""

    async def write(self, message: pb.RunnerMessage) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")


class OpenCall:
    def __init__(self) -> None:
        self.written: list[pb.RunnerMessage] = []
        self.wrote = asyncio.Event()

    async def write(self, message: pb.RunnerMessage) -> None:
        self.written.append(message)
        self.wrote.set()


def link() -> OperatorLink:
    config = RunnerConfig(
        operator_address="127.0.0.1:1", pod_name="p", pod_namespace="ns", pod_uid="u", entrypoint="m:f"
    )
    return OperatorLink(
        config,
        hello_state=lambda: (pb.RUNNER_STATE_IDLE, None, ""),
        on_message=lambda message: None,
        logs=LogBuffer(),
    )


async def test_a_status_being_written_when_the_stream_ends_goes_out_on_the_next_stream() -> None:
    runner = link()
    status = pb.RunnerMessage(job_status=pb.JobStatus(job_id="AJ_1", state=pb.JOB_STATE_RUNNING))
    runner.send(status)
    with pytest.raises(StreamFinished, match="RPC already finished"):
        await runner._send_loop(FinishedCall())

    after = OpenCall()
    sending = asyncio.create_task(runner._send_loop(after))
    try:
        await asyncio.wait_for(after.wrote.wait(), 5)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
    assert after.written == [status]


async def test_a_pong_being_written_when_the_stream_ends_is_not_sent_late() -> None:
    runner = link()
    runner._pongs.append(pb.RunnerMessage(pong=pb.Pong(ping_timestamp_us=1, timestamp_us=2)))
    with pytest.raises(StreamFinished):
        await runner._send_loop(FinishedCall())
    assert runner._next_outgoing() is None
