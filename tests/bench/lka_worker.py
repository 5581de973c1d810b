"""The reference: a livekit-agents worker with a trivial agent and its prewarmed process pool.

Run with the interpreter of a separate venv that has ``livekit-agents`` (the benchmark
creates it); configured by LIVEKIT_URL/KEY/SECRET, BENCH_AGENT_NAME, BENCH_IDLE_PROCESSES.
"""

from __future__ import annotations

import asyncio
import os

from livekit.agents import AgentServer, JobContext


def constant_load() -> float:
    """Never report itself full: its default load is CPU-based, and on a 2-core machine running
    every server of the benchmark it would refuse jobs at 4 at a time. The operator's load is
    jobs over capacity, which stays far below 1 here too."""
    return 0.0


server = AgentServer(
    num_idle_processes=int(os.environ.get("BENCH_IDLE_PROCESSES", "4")),
    port=0,
    load_threshold=1.0,
    load_fnc=constant_load,
)


@server.rtc_session(agent_name=os.environ["BENCH_AGENT_NAME"])
async def entrypoint(ctx: JobContext) -> None:
    """The same trivial agent as the operator's: join the room, stay until it ends."""
    await ctx.connect()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(server.run(devmode=False))
