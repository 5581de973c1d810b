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
CLOCK_SKEW_LIMIT = 10.0  # an offer sent longer ago than this (or in the future): skewed clocks


class Handover:
    """While ``active``, deployments hold LiveKit's job offers instead of taking them, and the
    warm pools stand still. ``successor_ready`` is set once the handover is over: with
    ``successor_serving`` when the next operator's workers are registered (a held offer is
    then declined, and LiveKit offers it to them), without when there is none.
    """

    def __init__(self, hold: float = HANDOVER_HOLD_SECONDS) -> None:
        self.active = False
        self.successor_ready = asyncio.Event()
        self.successor_serving = False
        self.hold = hold


async def pass_on(
    handover: Handover,
    answer: Callable[[agent.AvailabilityResponse], Awaitable[None]],
    job: agent.Job,
    fields: dict[str, str],
    labels: tuple[str, str],
    take: Callable[[], agent.AvailabilityResponse],
) -> None:
    """An offer during a handover: hold it until the next operator serves, then decline it.

    LiveKit then offers the job to its next available worker, which by then is the new
    operator's. The hold is bounded: LiveKit gives up on a job request after 3 s. LiveKit
    drops a job that every registered worker declined, so when the hold ends before the next
    operator serves (a slow start), the offer is answered here as any other (``take``): the
    job runs on a pod of this operator, and its runner re-attaches to the next one.
    """
    fields = {**fields, "job_id": job.id, "room": job.room.name}
    held = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handover.successor_ready.wait(), hold_left(job, handover.hold, time.time()))
    if not handover.successor_ready.is_set():
        log.info(
            "the next operator does not serve yet (held %.2fs); answering the offer here",
            time.monotonic() - held,
            extra=fields,
        )
        await answer(take())
        return
    metrics.AVAILABILITY_ANSWERS.labels(*labels, "no", "handover").inc()
    log.info("passed the job on to the next operator (held %.2fs)", time.monotonic() - held, extra=fields)
    await answer(agent.AvailabilityResponse(job_id=job.id, available=False))


def hold_left(job: agent.Job, hold: float, now: float) -> float:
    """What is left of the hold, counted from when LiveKit sent the offer (the job state's
    ``updated_at``): a loaded operator reads it late (2-3 s measured at load 20), and
    LiveKit's job request ends 3 s after it began. A time that looks skewed is not trusted."""
    sent = job.state.updated_at / 1e9
    elapsed = now - sent
    if sent <= 0 or not 0.0 <= elapsed <= CLOCK_SKEW_LIMIT:
        return hold
    return max(0.0, hold - elapsed)
