"""The leaving leader's side of a handover, as the deployments see it (see ``leadership``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from livekit.protocol import agent

from agent_operator import metrics

log = logging.getLogger("agent_operator.deployment")

HANDOVER_HOLD_SECONDS = 2.0  # LiveKit's job request times out after 3 s (psrpc's default)


class Handover:
    """While ``active``, deployments hold LiveKit's job offers instead of taking them, and the
    warm pools stand still; ``successor_ready`` is set once the next operator serves (or
    there is none), and the held offers are then declined, which makes LiveKit offer them to
    the next worker.
    """

    def __init__(self) -> None:
        self.active = False
        self.successor_ready = asyncio.Event()


async def pass_on(
    handover: Handover,
    answer: Callable[[agent.AvailabilityResponse], Awaitable[None]],
    job: agent.Job,
    fields: dict[str, str],
    labels: tuple[str, str],
) -> None:
    """An offer during a handover: hold it until the next operator serves, then decline it.

    LiveKit then offers the job to its next available worker, which by then is the new
    operator's. The hold is bounded: LiveKit gives up on a job request after 3 s.
    """
    fields = {**fields, "job_id": job.id, "room": job.room.name}
    held = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handover.successor_ready.wait(), HANDOVER_HOLD_SECONDS)
    metrics.AVAILABILITY_ANSWERS.labels(*labels, "no", "handover").inc()
    log.info("passed the job on to the next operator (held %.2fs)", time.monotonic() - held, extra=fields)
    await answer(agent.AvailabilityResponse(job_id=job.id, available=False))
