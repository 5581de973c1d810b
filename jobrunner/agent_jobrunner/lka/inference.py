"""The inference executor a livekit-agents job gets (the turn detector runs its model through it).

livekit-agents' worker starts one inference process per worker when the agent's module
registered an inference runner (importing ``livekit.plugins.turn_detector`` does), and every
job process of that worker shares it. Here each pod is a worker of one job: the runner starts
livekit-agents' own ``InferenceProcExecutor`` (its process, its runners) before it attaches,
so a warm pod has the models loaded too, and closes it when the runner exits.
"""

from __future__ import annotations

import asyncio
import multiprocessing

from livekit.agents.inference_runner import _InferenceRunner
from livekit.agents.ipc.inference_executor import InferenceExecutor
from livekit.agents.ipc.inference_proc_executor import InferenceProcExecutor

from agent_jobrunner.job import EntrypointError

# livekit-agents' worker's settings for its inference process
INITIALIZE_TIMEOUT = 5 * 60.0
CLOSE_TIMEOUT = 5.0


class NoInferenceExecutor(InferenceExecutor):
    """For an agent that registered no inference runner (no turn-detector plugin imported)."""

    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise RuntimeError(
            f"inference {method!r} asked for, but the agent's module registered no inference runner "
            "(import the plugin, e.g. livekit.plugins.turn_detector, at the top of the agent's module)"
        )


async def start_inference() -> InferenceExecutor:
    """The pod's inference process if the agent registered runners, else :class:`NoInferenceExecutor`."""
    runners = dict(_InferenceRunner.registered_runners)
    if not runners:
        return NoInferenceExecutor()
    executor = InferenceProcExecutor(
        runners=runners,
        initialize_timeout=INITIALIZE_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        memory_warn_mb=2000,
        memory_limit_mb=0,
        ping_interval=5,
        ping_timeout=60,
        high_ping_threshold=2.5,
        mp_ctx=multiprocessing.get_context("forkserver"),
        loop=asyncio.get_running_loop(),
        http_proxy=None,
    )
    try:
        await executor.start()
        await executor.initialize()
    except Exception as err:
        await close_inference(executor)
        raise EntrypointError(
            f"the inference process ({', '.join(sorted(runners))}) did not start: {type(err).__name__}: {err}"
        ) from err
    return executor


async def close_inference(executor: InferenceExecutor) -> None:
    if isinstance(executor, InferenceProcExecutor) and executor.started:
        await executor.aclose()
