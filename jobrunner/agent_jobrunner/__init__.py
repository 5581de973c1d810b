"""agent-jobrunner: the runtime inside a job pod.

Attaches to the operator over a gRPC stream, waits for its job, joins the LiveKit room and
runs the user's entrypoint, ``async def entrypoint(ctx: JobContext) -> None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agent_jobrunner.job import JobContext, get_job_context

__all__ = ["JobContext", "__version__", "get_job_context"]


def __getattr__(name: str) -> Any:
    # lazy: `agent-jobrunner --help` and the protocol package need not load the RTC SDK
    if name in ("JobContext", "get_job_context"):
        from agent_jobrunner import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
