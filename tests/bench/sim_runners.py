"""K simulated runners in one process: attach with real pod-bound tokens and answer pings.

They speak the runner protocol exactly (Hello, then Pong for every Ping) but run no job.
Prints ``ATTACHED n`` once all streams got their Welcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from pathlib import Path
from typing import Any

import grpc

from agent_jobrunner.protocol import PROTOCOL_VERSION, now_us, pb, pb_grpc

RETRIES = {"count": 0}


async def one_runner(stub: Any, item: dict[str, str], welcomed: asyncio.Queue[str]) -> None:
    """Attach, answer pings; like the real runner, attach again with backoff if refused."""
    delay = 0.2
    while True:
        call = stub.Attach()
        got_welcome = False
        try:
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
                    pong = pb.Pong(ping_timestamp_us=msg.ping.timestamp_us, timestamp_us=now_us())
                    await call.write(pb.RunnerMessage(pong=pong))
                elif kind == "welcome" and not got_welcome:
                    got_welcome = True
                    welcomed.put_nowait(item["uid"])
        except grpc.aio.AioRpcError:
            pass
        if got_welcome:
            return
        RETRIES["count"] += 1
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 5.0)


async def amain(args: argparse.Namespace, items: list[dict[str, str]]) -> None:
    # many connections, as many pods would have (one each); at most 50 streams share one, well
    # under HTTP/2's usual limit of 100 concurrent streams per connection
    count = max(args.channels, -(-len(items) // 50))
    channels = [
        grpc.aio.insecure_channel(args.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
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
    print(f"ATTACHED {len(items)} (re-attaches after refusals: {RETRIES['count']})", flush=True)
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
