"""The warm pool's reconcile loop during an API outage: it keeps trying every tick, and a
failure that repeats (the API server away) is logged once, its end once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDict, CIMultiDictProxy

from agent_operator import warm_pool
from agent_operator.kube.pods import brief

pytestmark = pytest.mark.unit


def unavailable(n: int) -> ApiException:
    """A 503 as kubernetes_asyncio raises it: its text carries the response's headers, with a
    new request id each time."""
    exc = ApiException(status=503, reason="Service Unavailable")
    exc.headers = CIMultiDictProxy(CIMultiDict({"Audit-Id": f"id-{n}", "Date": f"second {n}"}))
    exc.body = b"{}"
    return exc


def test_brief_is_the_same_for_the_same_failure() -> None:
    first, second = unavailable(1), unavailable(2)
    assert str(first) != str(second), "the full text differs (headers)"
    assert brief(first) == brief(second) == "503 Service Unavailable"
    assert brief(ConnectionRefusedError(111, "Connect call failed\nmore")) == (
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )


async def test_a_repeated_failure_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(warm_pool, "TICK_SECONDS", 0.01)
    unused: Any = None
    pool = warm_pool.WarmPool(
        unused,
        unused,
        unused,
        unused,
        unused,
        unused,
        fields={"deployment": "ns/voice"},
        trust=unused,
        event=unused,
    )
    calls = 0
    recovered = asyncio.Event()

    async def reconcile() -> None:
        nonlocal calls
        calls += 1
        if calls <= 20:
            raise unavailable(calls)
        recovered.set()

    monkeypatch.setattr(pool, "reconcile", reconcile)
    with caplog.at_level(logging.INFO, logger="agent_operator.pool"):
        task = asyncio.create_task(pool.run())
        try:
            await asyncio.wait_for(recovered.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records]
    assert calls > 20, "retried every tick"
    assert messages.count("pool reconcile failed: 503 Service Unavailable") == 1
    assert messages.count("pool reconcile works again") == 1
