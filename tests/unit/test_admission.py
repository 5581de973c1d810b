"""Admission bounds: pending-stream caps and the guarded credential check (no servers)."""

from __future__ import annotations

import asyncio

import pytest

from agent_operator.supervisor.admission import (
    AdmissionSettings,
    AttachGate,
    DropWatch,
    GuardedAuthenticator,
    LogThrottle,
    credential_key,
    peer_host,
)
from agent_operator.supervisor.types import AuthError, AuthUnavailable, PodIdentity

pytestmark = pytest.mark.unit

POD = PodIdentity("ns", "pod", "uid-1")


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:41234", "ipv4:10.0.0.7"),
        ("ipv6:[fd00::7]:41234", "ipv6:[fd00::7]"),
        ("ipv6:%5B::1%5D:5", "ipv6:%5B::1%5D"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("weird", "weird"),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_gate_caps_one_peer_and_lets_others_in() -> None:
    gate = AttachGate(AdmissionSettings(max_pending=10, max_pending_per_peer=2))
    assert gate.enter("ipv4:10.0.0.1:1") is None
    assert gate.enter("ipv4:10.0.0.1:2") is None
    refused = gate.enter("ipv4:10.0.0.1:3")
    assert refused is not None
    assert refused[0] == "peer_limit"
    assert "10.0.0.1" in refused[1]
    assert gate.enter("ipv4:10.0.0.2:1") is None
    assert gate.pending == 3
    gate.leave("ipv4:10.0.0.1:1")
    assert gate.enter("ipv4:10.0.0.1:4") is None


def test_gate_caps_the_total() -> None:
    gate = AttachGate(AdmissionSettings(max_pending=3, max_pending_per_peer=3))
    for i in range(3):
        assert gate.enter(f"ipv4:10.0.0.{i}:1") is None
    refused = gate.enter("ipv4:10.0.0.9:1")
    assert refused is not None
    assert refused[0] == "overload"


def test_admitting_releases_its_slot_even_when_the_body_raises() -> None:
    gate = AttachGate(AdmissionSettings(max_pending=1, max_pending_per_peer=1))

    def attach() -> None:
        with gate.admitting("ipv4:1.1.1.1:1") as refusal:
            assert refusal is None
            with gate.admitting("ipv4:2.2.2.2:1") as second:
                assert second is not None  # over the total; holds no slot
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        attach()
    assert gate.pending == 0
    gate.leave("ipv4:3.3.3.3:1")  # leaving without a slot does not go negative
    assert gate.pending == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_reviews"):
        AdmissionSettings(max_reviews=0)


class Reviews:
    """An authenticator that counts checks and can be held, so concurrency is visible."""

    def __init__(self, valid: str = "good") -> None:
        self.valid = valid
        self.calls: list[str] = []
        self.in_flight = self.peak = 0
        self.release = asyncio.Event()
        self.release.set()

    async def authenticate(self, credential: str) -> PodIdentity:
        self.calls.append(credential)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        if credential != self.valid:
            raise AuthError("credential refused by the API server: not valid")
        return POD


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_refused_credential_is_refused_again_from_the_cache_until_it_expires() -> None:
    inner, clock = Reviews(), Clock()
    guard = GuardedAuthenticator(inner, AdmissionSettings(refused_ttl=10), clock)
    for _ in range(5):
        with pytest.raises(AuthError, match="not valid"):
            await guard.authenticate("bogus")
    assert inner.calls == ["bogus"]
    assert guard.cache_refusals == 4
    clock.now += 10.5
    with pytest.raises(AuthError):
        await guard.authenticate("bogus")
    assert inner.calls == ["bogus", "bogus"]
    assert await guard.authenticate("good") == POD


def test_the_cache_keeps_a_hash_not_the_credential() -> None:
    guard = GuardedAuthenticator(Reviews(), AdmissionSettings())
    guard._remember_refusal(credential_key("secret-token"), "refused")
    assert "secret-token" not in repr(guard._refused)
    assert credential_key("secret-token") in guard._refused


async def test_the_negative_cache_is_bounded() -> None:
    inner = Reviews()
    guard = GuardedAuthenticator(inner, AdmissionSettings(refused_cache_size=3))
    for i in range(5):
        with pytest.raises(AuthError):
            await guard.authenticate(f"bogus-{i}")
    assert len(guard._refused) == 3
    with pytest.raises(AuthError):
        await guard.authenticate("bogus-0")  # evicted: checked again
    assert inner.calls.count("bogus-0") == 2


async def test_checks_in_flight_are_capped_and_the_rest_told_to_retry() -> None:
    inner = Reviews()
    inner.release.clear()
    guard = GuardedAuthenticator(inner, AdmissionSettings(max_reviews=3, review_wait=0.2))
    tasks = [asyncio.create_task(guard.authenticate(f"bogus-{i}")) for i in range(10)]
    await asyncio.sleep(0.4)
    assert inner.peak == 3
    inner.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    unavailable = [r for r in results if isinstance(r, AuthUnavailable)]
    refused = [r for r in results if isinstance(r, AuthError)]
    assert len(unavailable) == 7
    assert len(refused) == 3
    assert "try again" in str(unavailable[0])
    assert inner.peak == 3


async def test_concurrent_hellos_with_one_credential_cost_one_check() -> None:
    inner = Reviews()
    inner.release.clear()
    guard = GuardedAuthenticator(inner, AdmissionSettings())
    good = [asyncio.create_task(guard.authenticate("good")) for _ in range(20)]
    bad = [asyncio.create_task(guard.authenticate("bogus")) for _ in range(20)]
    await asyncio.sleep(0.05)
    inner.release.set()
    assert await asyncio.gather(*good) == [POD] * 20
    assert all(isinstance(r, AuthError) for r in await asyncio.gather(*bad, return_exceptions=True))
    assert sorted(inner.calls) == ["bogus", "good"]


async def test_an_empty_credential_costs_no_check() -> None:
    inner = Reviews()
    with pytest.raises(AuthError, match="no credential"):
        await GuardedAuthenticator(inner, AdmissionSettings()).authenticate("")
    assert inner.calls == []


def test_log_throttle_lets_a_burst_through_per_interval() -> None:
    throttle = LogThrottle(interval=10, burst=2)
    assert [throttle.allow("overload", t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert throttle.allow("auth", 3)
    assert throttle.allow("overload", 10.5)


def test_many_streams_dropping_at_once_is_a_burst_not_deaths() -> None:
    watch = DropWatch(burst=3, within=2.0)
    watch.dropped(10.0)
    watch.dropped(10.5)
    assert not watch.bursting(10.6)  # two killed runners are two deaths
    watch.dropped(11.0)
    assert watch.bursting(11.0)  # three within 2 s: the operator's network, not the runners
    assert not watch.bursting(12.6)  # the first two are older than 2 s by then
