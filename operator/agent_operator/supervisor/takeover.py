"""Whether a newer stream of a pod may take over from the session the pod already has.

A pod-bound token proves the pod, not the stream: a copy of it (read from the pod, or off a
plaintext network) attaches as well as the runner does. If a newer stream simply replaced
the current one, the copy would be handed the pod's next StartJobRequest and its room token.
So the current session is asked first: it is pinged at once, and while it answers, the
newer stream is refused. A runner only opens a second stream once its first is dead to it
(it gave up on it and closed it, or the network dropped it), and then the old session
either has ended already or no longer answers, and the new stream takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent_jobrunner.protocol import now_us, pb
from agent_operator.supervisor.heartbeat import HeartbeatSettings
from agent_operator.supervisor.session import RunnerSession, SessionClosed
from agent_operator.supervisor.slots import PodSlot

DUPLICATE_SESSION = "duplicate_session"  # the refusal's reason in the attach-failure metric
PROBE_MIN_SECONDS = 2.0
POLL_SECONDS = 0.02


def probe_timeout(heartbeat: HeartbeatSettings) -> float:
    """How long the current session has to answer the probe: a few high-ping thresholds, at
    least PROBE_MIN_SECONDS, never more than the ping timeout (pure)."""
    return min(heartbeat.ping_timeout, max(PROBE_MIN_SECONDS, 4 * heartbeat.high_ping_threshold))


async def still_answers(session: RunnerSession, within: float, clock: Callable[[], float]) -> bool:
    """Ping ``session`` now: True when it answers within ``within`` seconds (a pong of any
    ping in flight counts), False when it stays silent or ends."""
    if session.closed:
        return False
    heard = session.monitor.pongs
    timestamp = now_us()
    session.monitor.ping_sent(timestamp, clock())
    try:
        await session.send(pb.SupervisorMessage(ping=pb.Ping(timestamp_us=timestamp)))
    except SessionClosed:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not session.closed and loop.time() < deadline:
        if session.monitor.pongs > heard:
            return True
        await asyncio.sleep(POLL_SECONDS)
    return session.monitor.pongs > heard and not session.closed


async def current_session_answers(slot: PodSlot, clock: Callable[[], float]) -> bool:
    """The pod has a live session that answers a ping now (then a newer stream is refused:
    it may be a replayed token)."""
    previous = slot.session
    if previous is None or previous.closed:
        return False
    if await still_answers(previous, probe_timeout(slot.binding.heartbeat), clock):
        return True
    current = slot.session  # another stream may have won meanwhile
    return current is not None and current is not previous and not current.closed
