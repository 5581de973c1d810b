"""The scripted supervisor the runner tests talk to (tests/support/scripted_supervisor.py)
sees every stream end, even one the client cancels and replaces at once.

Issue 14, defect 15: test_runner_room.py::test_silent_operator_stream_is_replaced timed out on
``first.wait_ended()``. The runner does cancel the silent stream before it re-attaches, but
grpc.aio cancels the server's handler a second time while it cleans up (about one stream in a
hundred or two, here), and that cut the handler's cleanup short before it marked the session
ended. This test replaces a stream hundreds of times the way the runner does (a fresh channel
per attempt, the call cancelled, the channel closed, the next attempt at once)."""

from __future__ import annotations

import asyncio
import time

import pytest
from grpc import aio

from agent_jobrunner.link_channel import CHANNEL_OPTIONS
from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from tests.support.scripted_supervisor import SupervisorServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STREAMS = 400


async def attach_and_cancel(port: int, index: int) -> None:
    channel = aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    try:
        call = pb_grpc.RunnerSupervisorStub(channel).Attach()
        hello = pb.Hello(protocol_version=PROTOCOL_VERSION, pod_name=f"runner-{index}")
        await call.write(pb.RunnerMessage(hello=hello))
        welcome = await call.read()
        assert welcome.WhichOneof("message") == "welcome"
        reader = asyncio.create_task(call.read())  # as the runner's receive loop, cancelled
        await asyncio.sleep(0.01)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        call.cancel()
    finally:
        await channel.close()


async def test_every_cancelled_stream_ends_on_the_supervisor() -> None:
    server = SupervisorServer()
    server.servicer.pinging = False
    await server.start()
    try:
        started = time.monotonic()
        for index in range(STREAMS):
            await attach_and_cancel(server.port, index)
        sessions = await server.servicer.session(STREAMS - 1)
        assert sessions.hello.pod_name == f"runner-{STREAMS - 1}"
        # the last one may still be ending: give every session a few seconds, then count
        waits = [asyncio.create_task(s.ended.wait()) for s in server.servicer.sessions]
        _, pending = await asyncio.wait(waits, timeout=10)
        for wait in pending:
            wait.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        open_ = [i for i, s in enumerate(server.servicer.sessions) if not s.ended.is_set()]
        print(f"{STREAMS} streams replaced in {time.monotonic() - started:.1f}s; never ended: {open_}")
        assert len(server.servicer.sessions) == STREAMS
        assert open_ == [], f"{len(open_)} of {STREAMS} cancelled streams never ended on the supervisor"
    finally:
        await server.stop()
