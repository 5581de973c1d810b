"""The re-attach backoff schedule."""

from __future__ import annotations

import pytest

from agent_jobrunner.backoff import BASE_SECONDS, CAP_SECONDS, Backoff, backoff_delay

pytestmark = pytest.mark.unit


def test_schedule_doubles_from_the_base_up_to_the_cap() -> None:
    full = [backoff_delay(n, jitter=1.0) for n in range(10)]
    assert full[0] == pytest.approx(BASE_SECONDS)
    assert full[1] == pytest.approx(2 * BASE_SECONDS)
    assert full[2] == pytest.approx(4 * BASE_SECONDS)
    assert max(full) == pytest.approx(CAP_SECONDS)
    assert full == sorted(full)
    assert full[-1] == pytest.approx(CAP_SECONDS)


def test_jitter_spreads_within_half_a_step() -> None:
    for attempt in range(12):
        low = backoff_delay(attempt, jitter=0.0)
        high = backoff_delay(attempt, jitter=1.0)
        mid = backoff_delay(attempt, jitter=0.5)
        assert low == pytest.approx(high / 2)
        assert low < mid < high


def test_never_a_busy_loop() -> None:
    assert min(backoff_delay(n, jitter=0.0) for n in range(100)) >= BASE_SECONDS / 2


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, jitter=1.0) == pytest.approx(CAP_SECONDS)


@pytest.mark.parametrize(("attempt", "jitter"), [(-1, 0.5), (0, -0.1), (0, 1.5)])
def test_bad_arguments(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        backoff_delay(attempt, jitter)


def test_backoff_counts_and_resets() -> None:
    backoff = Backoff(rand=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(3)]
    assert delays == pytest.approx([0.1, 0.2, 0.4])
    assert backoff.attempt == 3
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_backoff_with_real_randomness_stays_in_bounds() -> None:
    backoff = Backoff()
    for attempt in range(50):
        delay = backoff.next_delay()
        step = min(CAP_SECONDS, BASE_SECONDS * 2**attempt)
        assert step / 2 <= delay <= step
