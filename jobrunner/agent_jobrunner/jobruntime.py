"""The job runtime a runner hosts, chosen by ``AGENT_RUNTIME``: a loaded agent makes one session per job.

``native`` runs an ``async def entrypoint(ctx)`` against :class:`agent_jobrunner.JobContext`;
``livekit-agents`` runs an unmodified livekit-agents agent in that framework's own job
runtime (``agent_jobrunner.lka``, imported only then, so a native image needs no
livekit-agents). Either way the agent is loaded, and prewarmed, before the runner attaches:
a warm pod has the user's code ready when its job comes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, Protocol

from livekit.protocol import agent as lk_agent

from agent_jobrunner.checkpoint import Checkpointer
from agent_jobrunner.job import Entrypoint, EntrypointError, JobSession, load_entrypoint
from agent_jobrunner.outcome import JobEnd
from agent_jobrunner.prewarm import PrewarmError, native_prewarm
from agent_jobrunner.protocol import pb

__all__ = ["EntrypointError", "JobRun", "LoadedAgent", "load_agent"]


class JobRun(Protocol):
    """One job in its runtime: started once, stopped once, reports its end through ``on_end``."""

    abandoned: list[asyncio.Task[Any]]
    # set once the job's room is joined: native, before ``start`` returns; livekit-agents,
    # when the entrypoint's ``ctx.connect()`` has (the runner then says JOB_STATE_RUNNING)
    joined: asyncio.Event

    async def start(self) -> None:
        """Start the job (the entrypoint is running when it returns); raises if it cannot start."""
        ...

    async def stop(self, reason: str, budget: float) -> bool:
        """Wind the job down within ``budget`` seconds; True if all of it finished in time."""
        ...


class LoadedAgent(Protocol):
    def job(
        self,
        request: pb.StartJobRequest,
        job: lk_agent.Job,
        on_end: Callable[[JobEnd], None],
        checkpointer: Checkpointer | None = None,
    ) -> JobRun:
        """The job's session; ``checkpointer`` takes its checkpoints (failover)."""
        ...

    async def aclose(self) -> None:
        """Stop what the agent runs for the whole pod (the runner is exiting)."""
        ...


class NativeAgent:
    def __init__(self, entrypoint: Entrypoint, userdata: dict[str, Any] | None = None) -> None:
        self.entrypoint = entrypoint
        self.userdata = userdata if userdata is not None else {}  # what its prewarm loaded

    def job(
        self,
        request: pb.StartJobRequest,
        job: lk_agent.Job,
        on_end: Callable[[JobEnd], None],
        checkpointer: Checkpointer | None = None,
    ) -> JobRun:
        return JobSession(request, job, self.entrypoint, on_end, self.userdata, checkpointer)

    async def aclose(self) -> None:
        return None


async def load_agent(runtime: str, entrypoint: str) -> LoadedAgent:
    """Import (and for livekit-agents, prewarm) the agent; raises :class:`EntrypointError`."""
    if runtime == "livekit-agents":
        from agent_jobrunner.lka.agent import load_lka_agent

        return await load_lka_agent(entrypoint)
    function = load_entrypoint(entrypoint)
    try:
        userdata = await native_prewarm(sys.modules[entrypoint.partition(":")[0]])
    except PrewarmError as err:
        raise EntrypointError(str(err)) from err
    return NativeAgent(function, userdata)
