"""Creating a pod rides out an unreachable API server for as long as it is allowed to, then
gives up with the real error (a closed port here, not a mock)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from agent_operator.kube.pods import PodManager
from devenv.procs import free_port

pytestmark = pytest.mark.unit

POD: dict[str, object] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p-abc", "namespace": "n"},
    "spec": {},
}


def create_errors() -> float:
    value = REGISTRY.get_sample_value("agent_operator_kube_api_errors_total", {"operation": "create_pod"})
    assert value is not None
    return value


async def test_retries_until_the_budget_is_spent_then_raises_the_cause() -> None:
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    async with client.ApiClient(config) as api:
        pods = PodManager(api)
        before = create_errors()
        with pytest.raises(aiohttp.ClientConnectionError):
            await pods.create(POD)  # no budget: one attempt
        assert create_errors() == before + 1

        t0 = time.monotonic()
        with pytest.raises(aiohttp.ClientConnectionError):
            await pods.create(POD, retry_for=1.5)
        elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 10, elapsed  # backoff 0.25, 0.5, ... never past the budget by a delay
    assert create_errors() >= before + 1 + 3, "each attempt is a counted API error"


async def test_an_api_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real socket that accepts and stays silent (a partition, a wedged server): without a
    timeout the call would hang for ever."""
    from agent_operator.kube import timeouts

    monkeypatch.setattr(timeouts, "REQUEST_TIMEOUT_SECONDS", 0.5)
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{port}"
    try:
        async with client.ApiClient(config) as api:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(PodManager(api).create(POD), 20)
            assert time.monotonic() - t0 < 5, "the request timeout ended it, not the test's guard"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
