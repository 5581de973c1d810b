"""The operator's metric helpers: Kubernetes API error counting and per-deployment series."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from agent_operator import metrics

pytestmark = pytest.mark.unit


class FakeApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def errors(operation: str) -> float:
    value = REGISTRY.get_sample_value("agent_operator_kube_api_errors_total", {"operation": operation})
    assert value is not None, "every operation's series exists from import on"
    return value


def test_kube_call_counts_failures_but_not_expected_answers() -> None:
    before = errors("delete_pod")
    with pytest.raises(FakeApiError), metrics.kube_call("delete_pod", expected=(404,)):
        raise FakeApiError(404)
    assert errors("delete_pod") == before
    with pytest.raises(FakeApiError), metrics.kube_call("delete_pod", expected=(404,)):
        raise FakeApiError(500)
    assert errors("delete_pod") == before + 1
    with pytest.raises(OSError, match="refused"), metrics.kube_call("delete_pod", expected=(404,)):
        raise OSError("connection refused")  # no HTTP status at all: the API server is away
    assert errors("delete_pod") == before + 2
    with metrics.kube_call("delete_pod"):
        pass
    assert errors("delete_pod") == before + 2


def test_deployment_series_start_at_zero_and_go_with_the_deployment() -> None:
    ns, name = "n", f"d{uuid.uuid4().hex[:6]}"
    labels = {"namespace": ns, "deployment": name}
    assert (
        REGISTRY.get_sample_value("agent_operator_jobs_ended_total", {**labels, "outcome": "killed"}) is None
    )

    metrics.init_deployment(ns, name)
    for outcome in metrics.OUTCOMES:
        assert (
            REGISTRY.get_sample_value("agent_operator_jobs_ended_total", {**labels, "outcome": outcome}) == 0
        )
    assert REGISTRY.get_sample_value("agent_operator_heartbeat_timeouts_total", labels) == 0
    assert REGISTRY.get_sample_value("agent_operator_jobs_started_total", {**labels, "path": "cold"}) == 0
    assert (
        REGISTRY.get_sample_value(
            "agent_operator_availability_answers_total", {**labels, "answer": "no", "reason": "at_capacity"}
        )
        == 0
    )
    metrics.JOBS_ENDED.labels(ns, name, "failed").inc()
    assert REGISTRY.get_sample_value("agent_operator_jobs_ended_total", {**labels, "outcome": "failed"}) == 1

    metrics.forget_deployment(ns, name)
    for outcome in metrics.OUTCOMES:
        assert (
            REGISTRY.get_sample_value("agent_operator_jobs_ended_total", {**labels, "outcome": outcome})
            is None
        )
    assert REGISTRY.get_sample_value("agent_operator_worker_connected", labels) is None
    assert (
        REGISTRY.get_sample_value(
            "agent_operator_job_start_latency_seconds_count", {**labels, "path": "warm"}
        )
        is None
    )
