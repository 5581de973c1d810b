"""Heartbeat rules, driven by an explicit clock."""

from __future__ import annotations

import pytest

from agent_operator.supervisor.heartbeat import HeartbeatMonitor, HeartbeatSettings
from agent_operator.supervisor.takeover import probe_timeout

pytestmark = pytest.mark.unit


def test_defaults_mirror_the_reference_framework() -> None:
    s = HeartbeatSettings()
    assert (s.ping_interval, s.ping_timeout, s.high_ping_threshold) == (2.5, 60.0, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ping_interval": 0}, "ping_interval must be > 0"),
        ({"ping_timeout": -1}, "ping_timeout must be > 0"),
        ({"start_timeout": 0}, "start_timeout must be > 0"),
        ({"ping_interval": 5, "ping_timeout": 5}, "must be shorter than"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HeartbeatSettings(**kwargs)


def test_pong_round_trip_and_high_ping() -> None:
    m = HeartbeatMonitor(HeartbeatSettings(high_ping_threshold=0.5), now=100.0)
    m.ping_sent(1, now=100.0)
    m.ping_sent(2, now=102.5)
    fast = m.pong_received(1, now=100.01)
    assert fast is not None
    assert fast.rtt == pytest.approx(0.01)
    assert not fast.high
    slow = m.pong_received(2, now=103.2)
    assert slow is not None
    assert slow.rtt == pytest.approx(0.7)
    assert slow.high
    assert m.in_flight == 0


def test_unknown_or_repeated_pong_is_ignored() -> None:
    m = HeartbeatMonitor(HeartbeatSettings(), now=0.0)
    m.ping_sent(7, now=1.0)
    assert m.pong_received(99, now=1.1) is None
    assert m.pong_received(7, now=1.1) is not None
    assert m.pong_received(7, now=1.2) is None  # a replayed pong proves nothing
    assert m.last_pong == pytest.approx(1.1)


def test_unresponsive_after_ping_timeout_without_pong() -> None:
    m = HeartbeatMonitor(HeartbeatSettings(ping_interval=1, ping_timeout=10), now=0.0)
    for t in range(10):
        m.ping_sent(t, now=float(t))
    assert not m.unresponsive(10.0)
    assert m.unresponsive(10.01)
    m.pong_received(9, now=10.5)
    assert not m.unresponsive(20.0)
    assert m.unresponsive(20.6)


def test_old_pings_are_forgotten() -> None:
    m = HeartbeatMonitor(HeartbeatSettings(ping_interval=1, ping_timeout=10), now=0.0)
    for t in range(100):
        m.ping_sent(t, now=float(t))
    assert m.in_flight <= 11


def test_pongs_count_only_answers_to_our_pings() -> None:
    m = HeartbeatMonitor(HeartbeatSettings(), now=0.0)
    m.ping_sent(1, 0.0)
    assert m.pong_received(99, 0.1) is None
    assert m.pongs == 0
    assert m.pong_received(1, 0.1) is not None
    assert m.pongs == 1


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (HeartbeatSettings(), 2.0),
        (HeartbeatSettings(high_ping_threshold=1.5), 6.0),
        (HeartbeatSettings(ping_interval=0.1, ping_timeout=1.0), 1.0),
    ],
)
def test_takeover_probe_waits_a_few_high_pings_within_the_ping_timeout(
    settings: HeartbeatSettings, expected: float
) -> None:
    assert probe_timeout(settings) == expected
