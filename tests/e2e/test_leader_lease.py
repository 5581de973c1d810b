"""The leader Lease against the real kube-apiserver: one holder, release, expiry, loss.

The expiry cases use short durations; the clock that counts is this process's (when it last
saw the record change), as in client-go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from agent_operator.kube.lease import SERVING_ANNOTATION, LeaderLease, LeaseLost
from devenv.kube import KubeAccess, write_token_kubeconfig
from devenv.kubeclient import api_client, eventually
from devenv.procs import free_port

pytestmark = pytest.mark.e2e


def lease(k8s: client.ApiClient, ns: str, who: str, duration: float = 15.0) -> LeaderLease:
    return LeaderLease(k8s, ns, "leader", who, duration=duration, renew_every=0.3, retry_every=0.5)


async def read(k8s: client.ApiClient, ns: str) -> client.V1Lease:
    return await client.CoordinationV1Api(k8s).read_namespaced_lease("leader", ns)


async def test_one_holder_and_a_release_is_taken_at_once(k8s: client.ApiClient, namespace: str) -> None:
    a = lease(k8s, namespace, "a")
    b = LeaderLease(k8s, namespace, "leader", "b", retry_every=60)  # only the watch can wake it
    assert await a.try_acquire()
    assert not await b.try_acquire(), "held and renewed: not free"
    assert (await read(k8s, namespace)).spec.holder_identity == "a"
    assert await a.try_acquire(), "the holder itself (a restarted container) takes it back"

    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(1.0)
    assert not waiting.done(), "b stands by while a holds the Lease"
    await a.release()
    await asyncio.wait_for(waiting, 20)  # well before its 60 s poll: the watch saw the release
    record = await read(k8s, namespace)
    assert record.spec.holder_identity == "b"
    assert record.spec.lease_transitions == 1


async def test_an_unrenewed_lease_expires_by_the_candidates_own_clock(
    k8s: client.ApiClient, namespace: str
) -> None:
    a, b = lease(k8s, namespace, "a", duration=2), lease(k8s, namespace, "b", duration=2)
    assert await a.try_acquire()
    assert not await b.try_acquire()  # b starts counting now
    started = time.monotonic()
    await asyncio.wait_for(b.acquire(), 15)  # a never renews
    assert time.monotonic() - started >= 1.9
    assert (await read(k8s, namespace)).spec.holder_identity == "b"


async def test_a_renewing_holder_is_never_displaced(k8s: client.ApiClient, namespace: str) -> None:
    a, b = lease(k8s, namespace, "a", duration=2), lease(k8s, namespace, "b", duration=2)
    assert await a.try_acquire()
    keeper = asyncio.create_task(a.keep())
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.acquire(), 5)
        assert (await read(k8s, namespace)).spec.holder_identity == "a"
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_refused_renewal_is_retried_not_given_up(
    k8s: client.ApiClient, namespace: str, kube: KubeAccess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server answers the holder's renewals with 401 for a while (credentials that
    stopped working): the holder keeps trying, logs it once, and renews again afterwards."""
    a = lease(k8s, namespace, "a")
    assert await a.try_acquire()
    bad = tmp_path / "bad.kubeconfig"
    write_token_kubeconfig(bad, kube.server, kube.ca_cert, "nobody", "not-a-token")
    keeper = asyncio.create_task(a.keep())
    try:
        reachable = a._api
        async with await api_client(bad) as refused:
            with caplog.at_level(logging.INFO, logger="agent_operator.lease"):
                a._api = client.CoordinationV1Api(refused)
                before = (await read(k8s, namespace)).spec.renew_time
                await asyncio.sleep(2.0)  # about 6 renewals, all refused
                assert not keeper.done(), "the keeper gave up"
                assert (await read(k8s, namespace)).spec.renew_time == before
                a._api = reachable

                async def renewed() -> bool:
                    return bool((await read(k8s, namespace)).spec.renew_time != before)

                await eventually(renewed, 10, "a renewal after the refusals")
        refusals = [r for r in caplog.records if "refused to renew" in r.getMessage()]
        assert len(refusals) == 1, "logged once, not every 0.3 s"
        assert "401" in refusals[0].getMessage()
        assert any("renewing the leader Lease again" in r.getMessage() for r in caplog.records)
        assert a.held
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_the_holder_learns_it_lost_the_lease(k8s: client.ApiClient, namespace: str) -> None:
    a, b = lease(k8s, namespace, "a", duration=1), lease(k8s, namespace, "b", duration=1)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await asyncio.wait_for(b.acquire(), 10)  # a paused past its duration (a long GC, a partition)
    with pytest.raises(LeaseLost, match="held by b"):
        await asyncio.wait_for(a.keep(), 10)
    assert not a.held


async def test_a_read_that_fails_counts_as_a_renewal_seen(k8s: client.ApiClient, namespace: str) -> None:
    """A candidate cut off from the API server must not take over the moment it is back.

    a never renews: without the rule, b would take the Lease after 2 s (the expiry test)."""
    a, b = lease(k8s, namespace, "a", duration=2), lease(k8s, namespace, "b", duration=2)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    reachable = b._api
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    async with client.ApiClient(cfg) as away:
        b._api = client.CoordinationV1Api(away)
        for _ in range(4):  # 3 s and more of failed reads
            assert not await b.try_acquire()
            await asyncio.sleep(1)
    b._api = reachable
    assert not await b.try_acquire(), "took over right after the outage"
    assert (await read(k8s, namespace)).spec.holder_identity == "a"


async def test_serving_mark_and_successor(k8s: client.ApiClient, namespace: str) -> None:
    a, b = lease(k8s, namespace, "a"), lease(k8s, namespace, "b")
    assert await a.try_acquire()
    assert await a.successor() == ("a", False)
    await a.release()
    assert await a.successor() == ("", False)
    assert await b.try_acquire()
    assert await a.successor() == ("b", False), "taken, not yet serving"
    await b.mark_serving()
    assert await a.successor() == ("b", True)
    annotations = (await read(k8s, namespace)).metadata.annotations
    assert annotations[SERVING_ANNOTATION] == "b"
    # the next holder starts unmarked
    await b.release()
    assert await a.try_acquire()
    assert await b.successor() == ("a", False)

    async def unmarked() -> bool:
        return SERVING_ANNOTATION not in ((await read(k8s, namespace)).metadata.annotations or {})

    await eventually(unmarked, 5, "the serving mark cleared by the new holder")
