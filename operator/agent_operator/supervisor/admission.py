"""Bounds on what an unauthenticated caller can make the operator do.

Anything that reaches the runner port can open streams and send Hellos before it has proved
anything: each open stream holds a task, and each Hello with a credential costs a TokenReview
against the API server (whose throttling would then turn real runners away). So:

- ``AttachGate`` caps the streams that have not attached yet (opened, Hello not read, or
  credential being checked), in total and per peer address; a stream over a cap is refused
  at once with RESOURCE_EXHAUSTED and never reads a message.
- ``GuardedAuthenticator`` wraps the real authenticator: at most ``max_reviews`` checks in
  flight (the rest wait up to ``review_wait`` and are then told UNAVAILABLE, retry later),
  one check for concurrent Hellos with the same credential, and a short negative cache of
  refused credentials, keyed by their SHA-256 (the credential itself is never kept).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from agent_operator.supervisor.types import Authenticator, AuthError, AuthUnavailable, PodIdentity

# refusal reasons, as counted in agent_operator_runner_attach_failures_total{reason}
TOO_MANY_PENDING = "overload"
TOO_MANY_FROM_PEER = "peer_limit"


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    # streams not yet attached, in total and from one peer address
    max_pending: int = 256
    max_pending_per_peer: int = 32
    # credential checks (TokenReviews) in flight at once, and how long a Hello waits for one
    max_reviews: int = 8
    review_wait: float = 5.0
    # a refused credential is refused again without a review for this long
    refused_ttl: float = 10.0
    refused_cache_size: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_pending", "max_pending_per_peer", "max_reviews", "refused_cache_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"admission {name} must be at least 1")
        if self.review_wait <= 0 or self.refused_ttl < 0:
            raise ValueError("admission review_wait must be > 0 and refused_ttl >= 0")


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string ("ipv4:10.0.0.7:41234" -> "ipv4:10.0.0.7",
    "ipv6:[fd00::7]:41234" -> "ipv6:[fd00::7]"); other forms are taken whole."""
    kind, sep, rest = peer.partition(":")
    if not sep or kind not in ("ipv4", "ipv6"):
        return peer
    if rest.startswith("["):
        return f"{kind}:{rest[: rest.find(']') + 1]}" if "]" in rest else peer
    host, colon, _port = rest.rpartition(":")
    return f"{kind}:{host}" if colon else peer


class AttachGate:
    """Counts the streams that have not attached yet; refuses one over a cap."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.pending = 0
        self._by_peer: dict[str, int] = {}
        self.drops = DropWatch()

    def enter(self, peer: str) -> tuple[str, str] | None:
        """Count a new stream from ``peer``; or (reason, message) when it is over a cap."""
        host = peer_host(peer)
        if self.pending >= self.settings.max_pending:
            return TOO_MANY_PENDING, f"too many runner streams being admitted ({self.pending}); try again"
        if self._by_peer.get(host, 0) >= self.settings.max_pending_per_peer:
            return (
                TOO_MANY_FROM_PEER,
                f"too many runner streams being admitted from {host}"
                f" (limit {self.settings.max_pending_per_peer}); try again",
            )
        self.pending += 1
        self._by_peer[host] = self._by_peer.get(host, 0) + 1
        return None

    def leave(self, peer: str) -> None:
        host = peer_host(peer)
        left = self._by_peer.get(host, 0) - 1
        if left < 0:
            return
        self.pending -= 1
        if left:
            self._by_peer[host] = left
        else:
            del self._by_peer[host]

    def may_return(self, peer: str, now: float) -> bool:
        """Whether a runner at ``peer`` whose stream dropped may be attaching again: a stream
        from its address is being admitted, or many streams dropped at once (``drops``)."""
        return self._by_peer.get(peer_host(peer), 0) > 0 or self.drops.bursting(now)

    @contextlib.contextmanager
    def admitting(self, peer: str) -> Iterator[tuple[str, str] | None]:
        """Hold a pending slot while the body runs; yields the refusal (no slot held) or None."""
        refusal = self.enter(peer)
        try:
            yield refusal
        finally:
            if refusal is None:
                self.leave(peer)


class DropWatch:
    """Counts runner streams that dropped: many at once (this operator's network, not their
    runners, failed) is no sign of any runner's death."""

    def __init__(self, burst: int = 8, within: float = 2.0) -> None:
        self.burst = burst
        self.within = within
        self._times: collections.deque[float] = collections.deque()

    def dropped(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def bursting(self, now: float) -> bool:
        self._trim(now)
        return len(self._times) >= self.burst

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.within:
            self._times.popleft()


def credential_key(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class GuardedAuthenticator:
    """An ``Authenticator`` that bounds the checks a flood of Hellos can cause."""

    def __init__(
        self,
        inner: Authenticator,
        settings: AdmissionSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_reviews)
        self._in_flight: dict[str, asyncio.Future[PodIdentity]] = {}
        # sha256(credential) -> (why it was refused, until when)
        self._refused: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.checks = 0  # checks passed to the inner authenticator
        self.cache_refusals = 0

    async def authenticate(self, credential: str) -> PodIdentity:
        if not credential:
            raise AuthError("no credential presented")
        key = credential_key(credential)
        why = self._recently_refused(key)
        if why:
            self.cache_refusals += 1
            raise AuthError(why)
        shared = self._in_flight.get(key)
        if shared is not None:  # the same credential is being checked: share its answer
            return await asyncio.shield(shared)
        future: asyncio.Future[PodIdentity] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            identity = await self._check(credential, key)
        except BaseException as exc:
            if isinstance(exc, AuthError | AuthUnavailable):
                future.set_exception(type(exc)(str(exc)))
            else:
                future.set_exception(AuthUnavailable("credential check failed; try again"))
            future.exception()  # retrieved: nobody may share it
            raise
        else:
            future.set_result(identity)
            return identity
        finally:
            del self._in_flight[key]

    async def _check(self, credential: str, key: str) -> PodIdentity:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.settings.review_wait)
        except TimeoutError:
            raise AuthUnavailable("too many credential checks in flight; try again") from None
        try:
            self.checks += 1
            return await self.inner.authenticate(credential)
        except AuthError as exc:
            self._remember_refusal(key, str(exc))
            raise
        finally:
            self._slots.release()

    def _recently_refused(self, key: str) -> str:
        hit = self._refused.get(key)
        if hit is None:
            return ""
        if hit[1] <= self._clock():
            del self._refused[key]
            return ""
        return hit[0]

    def _remember_refusal(self, key: str, why: str) -> None:
        if self.settings.refused_ttl <= 0:
            return
        self._refused[key] = (why, self._clock() + self.settings.refused_ttl)
        self._refused.move_to_end(key)
        while len(self._refused) > self.settings.refused_cache_size:
            self._refused.popitem(last=False)


class LogThrottle:
    """Lets through the first ``burst`` lines of each kind per ``interval`` seconds."""

    def __init__(self, interval: float = 10.0, burst: int = 5) -> None:
        self.interval, self.burst = interval, burst
        self._windows: dict[str, tuple[float, int]] = {}

    def allow(self, kind: str, now: float) -> bool:
        start, count = self._windows.get(kind, (now, 0))
        if now - start >= self.interval:
            start, count = now, 0
        self._windows[kind] = (start, count + 1)
        return count < self.burst
