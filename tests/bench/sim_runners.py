"""K simulated runners in one process: attach with real pod-bound tokens and answer pings.

They speak the runner protocol exactly (Hello, then Pong for every Ping) but run no job.
Prints ``ATTACHED n`` once all streams got their Welcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import grpc

from agent_jobrunner.protocol import PROTOCOL_VERSION, now_us, pb, pb_grpc


async def one_runner(stub: Any, item: dict[str, str], welcomed: asyncio.Queue[str]) -> None:
    call = stub.Attach()
    await call.write(
        pb.RunnerMessage(
            hello=pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                pod_namespace=item["namespace"],
                pod_name=item["name"],
                pod_uid=item["uid"],
                credential=item["token"],
                state=pb.RUNNER_STATE_IDLE,
            )
        )
    )
    async for msg in call:
        kind = msg.WhichOneof("message")
        if kind == "ping":
            await call.write(
                pb.RunnerMessage(pong=pb.Pong(ping_timestamp_us=msg.ping.timestamp_us, timestamp_us=now_us()))
            )
        elif kind == "welcome":
            welcomed.put_nowait(item["uid"])


async def amain(args: argparse.Namespace, items: list[dict[str, str]]) -> None:
    # a few channels, as many pods would have many TCP connections; streams spread over them
    channels = [
        grpc.aio.insecure_channel(args.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    stubs = [pb_grpc.RunnerSupervisorStub(c) for c in channels]
    welcomed: asyncio.Queue[str] = asyncio.Queue()
    tasks = []
    for i, item in enumerate(items):
        tasks.append(asyncio.create_task(one_runner(stubs[i % len(stubs)], item, welcomed)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # attach as a pool filling up would, not all in one tick
    for _ in items:
        await welcomed.get()
    print(f"ATTACHED {len(items)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--pods", required=True)
    parser.add_argument("--channels", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(amain(args, json.loads(Path(args.pods).read_text())))


if __name__ == "__main__":
    main()
