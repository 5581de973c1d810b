"""Heartbeat decisions, as pure code: when a pong is late, when a runner is dead.

The clock is passed in (monotonic seconds), so the rules are tested without sleeping.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class HeartbeatSettings:
    """The four timeouts of a runner session (seconds); each settable per AgentDeployment."""

    # from assignment until the runner answers StartJobRequest (attach included: on the
    # cold path this covers the pod's scheduling and start)
    start_timeout: float = 60.0
    ping_interval: float = 2.5
    # no pong for this long: the runner is unresponsive and its pod is deleted
    ping_timeout: float = 60.0
    # a pong later than this is logged and counted as a high ping
    high_ping_threshold: float = 0.5

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"heartbeat {field.name} must be > 0, got {value!r}")
        if self.ping_interval >= self.ping_timeout:
            raise ValueError(
                f"heartbeat ping_interval ({self.ping_interval}s) must be shorter than "
                f"ping_timeout ({self.ping_timeout}s)"
            )


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
