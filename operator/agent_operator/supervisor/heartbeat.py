"""Heartbeat decisions, as pure code: when a pong is late, when a runner is dead.

The clock is passed in (monotonic seconds), so the rules are tested without sleeping.
"""

from __future__ import annotations

import dataclasses

from agent_operator.vocabulary import HeartbeatSettings as HeartbeatSettings


@dataclasses.dataclass(frozen=True)
class PongReport:
    rtt: float
    high: bool


class HeartbeatMonitor:
    """Tracks pings in flight and the last pong of one runner session."""

    def __init__(self, settings: HeartbeatSettings, now: float) -> None:
        self.settings = settings
        self.last_pong = now
        self.pongs = 0  # pongs of pings we sent, ever
        self._in_flight: dict[int, float] = {}

    def ping_sent(self, timestamp_us: int, now: float) -> None:
        self._in_flight[timestamp_us] = now
        # pings older than the timeout can no longer matter
        horizon = now - self.settings.ping_timeout
        for ts in [ts for ts, sent in self._in_flight.items() if sent < horizon]:
            del self._in_flight[ts]

    def pong_received(self, ping_timestamp_us: int, now: float) -> PongReport | None:
        """The pong's round trip, or None for a pong of no ping we sent (ignored)."""
        sent = self._in_flight.pop(ping_timestamp_us, None)
        if sent is None:
            return None
        self.last_pong = now
        self.pongs += 1
        rtt = now - sent
        return PongReport(rtt=rtt, high=rtt > self.settings.high_ping_threshold)

    def silent_for(self, now: float) -> float:
        return now - self.last_pong

    def unresponsive(self, now: float) -> bool:
        return self.silent_for(now) > self.settings.ping_timeout

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
