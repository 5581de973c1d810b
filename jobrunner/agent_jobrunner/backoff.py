"""Reconnect backoff: exponential, capped, with jitter (pure schedule + a small stateful helper)."""

from __future__ import annotations

import random
from collections.abc import Callable

BASE_SECONDS = 0.1
CAP_SECONDS = 5.0


def backoff_delay(attempt: int, jitter: float, base: float = BASE_SECONDS, cap: float = CAP_SECONDS) -> float:
    """Delay before retry number ``attempt`` (0-based), with ``jitter`` drawn from [0, 1).

    "Equal jitter": half of the exponential step is fixed and half is random, so retries from
    many pods spread out while no delay ever drops below half a step (never a busy loop).
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be in [0, 1]")
    step = min(cap, base * 2.0 ** min(attempt, 64))
    return step / 2.0 + step / 2.0 * jitter


class Backoff:
    """Counts failed attempts and hands out the next delay; ``reset()`` after a success."""

    def __init__(
        self,
        base: float = BASE_SECONDS,
        cap: float = CAP_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rand = rand

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, self._rand(), self.base, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
