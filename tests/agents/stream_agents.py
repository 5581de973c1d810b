"""Entrypoints the runner-stream tests run inside real runner processes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("test.agent")


async def _beacon(ctx: Any, payload: bytes) -> None:
    """Publish ``payload`` on the data channel twice a second (a late subscriber still hears it)."""
    while True:
        await ctx.room.local_participant.publish_data(payload, reliable=True, topic="test")
        await asyncio.sleep(0.5)


async def beacon_until_bye(ctx: Any) -> None:
    """Publish a beacon; end the job with ctx.shutdown() when a participant sends b"bye"."""
    bye = asyncio.Event()

    def on_data(packet: Any) -> None:
        if packet.data == b"bye":
            bye.set()

    ctx.room.on("data_received", on_data)
    log.info("agent up", extra={"agent_identity": ctx.room.local_participant.identity})
    beacon = asyncio.create_task(_beacon(ctx, f"hello from {ctx.job.id}".encode()))
    try:
        await bye.wait()
    finally:
        beacon.cancel()
        await asyncio.gather(beacon, return_exceptions=True)
    log.info("caller said bye")
    ctx.shutdown("caller said bye")


async def beacon_forever(ctx: Any) -> None:
    """Publish a beacon until cancelled (by shutdown, SIGTERM or the runner dying)."""
    await _beacon(ctx, f"hello from {ctx.job.id}".encode())


async def fail_after_join(ctx: Any) -> None:
    await asyncio.sleep(0.2)
    raise RuntimeError("the agent broke on purpose")


async def idle(ctx: Any) -> None:
    """The benchmark's trivial agent: in the room (the runner joined it), doing nothing."""
    await asyncio.Event().wait()
