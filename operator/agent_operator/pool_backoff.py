"""How fast a warm pool replaces pods that fail before they ever serve, as a pure record.

A pool pod whose agent cannot be prewarmed, whose image cannot be pulled or that no node takes
will fail again in its replacement, so replacements wait: 2 s after the first failure in a row,
doubling up to 5 min, and back to none once a pool pod's runner attaches prewarmed. The last
failure is what the deployment's ``WarmPoolDegraded`` condition and its Events say, with
anything that looks like a token or a secret taken out and the text cut short.
"""

from __future__ import annotations

import dataclasses
import re

BASE_SECONDS = 2.0
MAX_SECONDS = 300.0
# pod_failures already cuts what the kubelet said to 400 characters: this keeps the advice after it
MESSAGE_LIMIT = 1000

# a JWT (a room or ServiceAccount token), and the value of a key=value / key: value pair whose
# key names a secret
_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w-]*(?:secret|token|password|passwd|api[_-]?key|credential)s?[\w-]*)(\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|\S+)"
)


def for_people(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as an Event or a condition may carry it: one line, no token or secret value, at
    most ``limit`` characters."""
    text = _JWT.sub("[redacted]", " ".join(text.split()))
    text = _SECRET_PAIR.sub(lambda m: f"{m[1]}{m[2]}[redacted]", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclasses.dataclass(frozen=True)
class PoolFailure:
    reason: str  # PrewarmFailed, AttachTimeout, ErrImagePull, ..., Unschedulable
    message: str  # for people (``for_people``)
    in_a_row: int  # pool pods failed since the last one that attached
    delay: float  # seconds before the next pool pod is created


class PoolBackoff:
    def __init__(self, base: float = BASE_SECONDS, cap: float = MAX_SECONDS) -> None:
        self.base = base
        self.cap = cap
        self.last: PoolFailure | None = None  # None: no failure since the last success
        self._not_before = 0.0

    def failed(self, now: float, reason: str, message: str) -> PoolFailure:
        in_a_row = (self.last.in_a_row if self.last else 0) + 1
        delay = min(self.cap, self.base * 2 ** (in_a_row - 1))
        self._not_before = now + delay
        self.last = PoolFailure(reason, for_people(message), in_a_row, delay)
        return self.last

    def succeeded(self) -> None:
        """A pool pod's runner attached prewarmed: the next replacement waits for nothing."""
        self.last = None
        self._not_before = 0.0

    def allows(self, now: float) -> bool:
        """Whether a pool pod may be created now."""
        return now >= self._not_before
