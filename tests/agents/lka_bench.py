"""The agent of the dispatch-latency comparison (``tests/bench/dispatch_latency.py``): one
livekit-agents module, unchanged on both sides.

- livekit-agents' own worker: ``python tests/agents/lka_bench.py start`` (with LIVEKIT_URL,
  LIVEKIT_API_KEY, LIVEKIT_API_SECRET and AGENT_NAME), its prewarmed idle processes at the
  framework's default count;
- the operator: an AgentDeployment with ``runtime: livekit-agents`` and ``entrypoint:
  tests.agents.lka_bench:server``, its warm pool pods prewarmed.

It prewarms (``setup_fnc``), joins the room and stays until the room ends. One setting differs
from the framework's defaults, for its own worker only: the load it reports is 0, because its
default (this machine's CPU use) refuses every job when the benchmark's servers and six other
users share two cores. The operator reports jobs over capacity, and ignores both settings.
``LKA_BENCH_IDLE_PROCESSES``, when set, is its worker's ``num_idle_processes`` (the benchmark's
case e, a second worker beside c's: its health server takes any free port, as c's holds the
default 8081); the operator ignores it too.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import AgentServer, JobContext, JobProcess, cli

log = logging.getLogger("lka-bench")


def prewarm(proc: JobProcess) -> None:
    proc.userdata["prewarmed"] = True


def no_cpu_load() -> float:
    return 0.0


_idle = os.environ.get("LKA_BENCH_IDLE_PROCESSES")
if _idle is None:
    server = AgentServer(setup_fnc=prewarm, load_fnc=no_cpu_load, load_threshold=1.0)
else:
    server = AgentServer(
        setup_fnc=prewarm,
        load_fnc=no_cpu_load,
        load_threshold=1.0,
        num_idle_processes=int(_idle),
        port=0,
    )


@server.rtc_session(agent_name=os.environ.get("AGENT_NAME", "lka-bench"))
async def entrypoint(ctx: JobContext) -> None:
    # the benchmark's marks on both sides (tests/bench/dispatch_stages.py)
    log.info("bench: entrypoint entered in room %s", ctx.room.name)
    await ctx.connect()
    log.info("bench: connected to room %s", ctx.room.name)


if __name__ == "__main__":
    cli.run_app(server)
