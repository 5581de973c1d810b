"""Events are best effort: an API server that is away is logged and counted, never raised."""

from __future__ import annotations

import logging

import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from agent_operator.kube.events import EventRecorder
from agent_operator.kube.podspec import Owner
from devenv.procs import free_port

pytestmark = pytest.mark.unit


async def test_event_to_an_unreachable_api_server_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    before = REGISTRY.get_sample_value("agent_operator_kube_api_errors_total", {"operation": "create_event"})
    async with client.ApiClient(config) as api:
        recorder = EventRecorder(api)
        with caplog.at_level(logging.WARNING, "agent_operator.kube.events"):
            await recorder.record(Owner("team-a", "agent", "uid-1"), "JobStarted", "job started")
    after = REGISTRY.get_sample_value("agent_operator_kube_api_errors_total", {"operation": "create_event"})
    assert before is not None
    assert after == before + 1
    (record,) = [r for r in caplog.records if r.name == "agent_operator.kube.events"]
    assert "could not post event JobStarted" in record.getMessage()
    assert record.deployment == "team-a/agent"  # type: ignore[attr-defined]
