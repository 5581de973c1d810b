"""A runner's side of the stream in a process of its own, for tests that kill it for real:
``python -m tests.support.stream_runner PORT NAMESPACE NAME UID`` attaches idle, starts the job
it is given, reports it running, prints ``running`` and then waits to be killed (or, told
``drop`` on stdin, breaks its connection and attaches again, as a live runner does)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc


def hello(namespace: str, name: str, uid: str, state: int, job_id: str = "") -> pb.RunnerMessage:
    message = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        pod_namespace=namespace,
        pod_name=name,
        pod_uid=uid,
        credential="accepted",
        state=state,  # type: ignore[arg-type]
    )
    if job_id:
        message.running_job.job_id = job_id
    return pb.RunnerMessage(hello=message)


async def attach(port: int, first: pb.RunnerMessage, started: asyncio.Event) -> None:
    """One stream: Hello, then start whatever job comes; returns when the stream ends."""
    outbox: asyncio.Queue[pb.RunnerMessage] = asyncio.Queue()
    outbox.put_nowait(first)

    async def requests() -> AsyncIterator[pb.RunnerMessage]:
        while True:
            yield await outbox.get()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        async for message in pb_grpc.RunnerSupervisorStub(channel).Attach(requests()):
            kind = message.WhichOneof("message")
            if kind == "ping":
                outbox.put_nowait(pb.RunnerMessage(pong=pb.Pong(ping_timestamp_us=message.ping.timestamp_us)))
            elif kind == "start_job":
                job_id = "J1"
                outbox.put_nowait(pb.RunnerMessage(start_job_response=pb.StartJobResponse(job_id=job_id)))
                status = pb.JobStatus(job_id=job_id, state=pb.JOB_STATE_RUNNING)
                outbox.put_nowait(pb.RunnerMessage(job_status=status))
                started.set()


async def main(port: int, namespace: str, name: str, uid: str) -> None:
    started = asyncio.Event()
    stream = asyncio.create_task(attach(port, hello(namespace, name, uid, pb.RUNNER_STATE_IDLE), started))
    await started.wait()
    print("running", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() == "drop":  # a live runner whose connection broke: it attaches again
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        await asyncio.sleep(0.1)
        again = hello(namespace, name, uid, pb.RUNNER_STATE_RUNNING, job_id="J1")
        stream = asyncio.create_task(attach(port, again, asyncio.Event()))
        print("again", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
    stream.cancel()
    await asyncio.gather(stream, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), *sys.argv[2:5]))
