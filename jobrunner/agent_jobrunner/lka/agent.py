"""Load a livekit-agents agent as it is, and prewarm it the way livekit-agents prewarms a process.

``AGENT_ENTRYPOINT=module:attribute`` names, in the agent's own module (which still runs under
``python agent.py start``): an ``AgentServer`` with its ``@server.rtc_session()``, a
``WorkerOptions`` (``ServerOptions``), or an ``async def entrypoint(ctx: JobContext)``. Nothing
of the server runs here: no worker registers, no process pool starts. What is taken from it is
what livekit-agents hands each of its job processes: the entrypoint, ``setup_fnc``/
``prewarm_fnc`` (run once, into this process's ``JobProcess.userdata``, before the runner
attaches), ``on_session_end`` and the session-end and prewarm timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent_jobrunner.job import EntrypointError, import_attribute, is_async_callable
from agent_jobrunner.lka.version import check_supported
from agent_jobrunner.prewarm import PrewarmError, run_in_thread

if TYPE_CHECKING:
    from agent_jobrunner.lka.session import LkaAgent

logger = logging.getLogger(__name__)

# livekit-agents' own defaults (ServerOptions), for a bare entrypoint function
DEFAULT_SESSION_END_TIMEOUT = 300.0
DEFAULT_PREWARM_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class AgentParts:
    """What livekit-agents' worker would give each job process of this agent."""

    entrypoint: Callable[[Any], Awaitable[None]]
    setup: Callable[[Any], Any] | None = None
    session_end: Callable[[Any], Awaitable[None]] | None = None
    session_end_timeout: float = DEFAULT_SESSION_END_TIMEOUT
    prewarm_timeout: float = DEFAULT_PREWARM_TIMEOUT
    # what the agent was given as: "AgentServer", "WorkerOptions" or "function"
    style: str = "function"


def agent_parts(found: Any, spec: str) -> AgentParts:
    """The parts of ``found`` (the object ``spec`` names); raises :class:`EntrypointError`."""
    from livekit.agents import AgentServer, WorkerOptions

    if isinstance(found, AgentServer):
        entrypoint = found._entrypoint_fnc
        if entrypoint is None:
            raise EntrypointError(
                f"{spec} is an AgentServer without an entrypoint (no @server.rtc_session())"
            )
        return AgentParts(
            entrypoint=entrypoint,
            setup=found.setup_fnc,
            session_end=found._session_end_fnc,
            session_end_timeout=float(found._session_end_timeout),
            prewarm_timeout=float(found._initialize_process_timeout),
            style="AgentServer",
        )
    if isinstance(found, WorkerOptions):
        if not is_async_callable(found.entrypoint_fnc):
            raise EntrypointError(f"{spec}: WorkerOptions.entrypoint_fnc is not an async function")
        return AgentParts(
            entrypoint=found.entrypoint_fnc,
            setup=found.prewarm_fnc,
            session_end_timeout=float(found.session_end_timeout),
            prewarm_timeout=float(found.initialize_process_timeout),
            style="WorkerOptions",
        )
    if is_async_callable(found):
        return AgentParts(entrypoint=found)
    raise EntrypointError(
        f"{spec} is a {type(found).__name__}; runtime livekit-agents wants an AgentServer, a "
        "WorkerOptions or an async def entrypoint(ctx: livekit.agents.JobContext)"
    )


def resolve(spec: str) -> AgentParts:
    """Import ``module:attribute`` and take its parts."""
    found, _ = import_attribute(spec)
    return agent_parts(found, spec)


async def prewarm(setup: Callable[[Any], Any], process: Any, timeout: float) -> None:
    """Run ``setup(process)`` as livekit-agents runs it in a fresh job process: synchronously,
    with no event loop running in its thread (``agent_jobrunner.prewarm.run_in_thread``)."""
    try:
        await run_in_thread(lambda: setup(process), timeout, "the prewarm (setup_fnc)")
    except PrewarmError as err:
        raise EntrypointError(str(err)) from err


async def load_lka_agent(spec: str) -> LkaAgent:
    """The agent named by ``spec``, prewarmed; raises :class:`EntrypointError` naming the problem."""
    version = check_supported()
    parts = resolve(spec)
    from livekit.agents import JobExecutorType, JobProcess
    from livekit.agents.ipc.inference_proc_executor import InferenceProcExecutor

    from agent_jobrunner.lka.inference import start_inference
    from agent_jobrunner.lka.session import LkaAgent

    process = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    if parts.setup is not None:
        started = asyncio.get_running_loop().time()
        await prewarm(parts.setup, process, parts.prewarm_timeout)
        logger.info(
            "prewarmed the agent (setup_fnc) in %.2fs",
            asyncio.get_running_loop().time() - started,
            extra={"userdata_keys": ",".join(sorted(map(str, process.userdata)))},
        )
    inference = await start_inference()
    if isinstance(inference, InferenceProcExecutor):
        logger.info("started the pod's inference process", extra={"inference_pid": inference.pid})
    logger.info("livekit-agents %s agent %s loaded (%s)", version, spec, parts.style)
    return LkaAgent(parts, process, inference)
