"""Warm pool pods whose agent cannot be prewarmed, under the real operator.

A livekit-agents agent whose ``setup_fnc`` raises, one whose ``setup_fnc`` hangs (bounded by the
server's ``initialize_process_timeout``) and a native agent whose module raises at import: the
runner says so when it attaches, the pod is never counted idle, a ``PoolPodFailed`` Event
carries the error, ``WarmPoolDegraded`` names it, and the pool replaces the pod at growing
intervals. A dispatch meanwhile is placed on the cold path; when that pod's prewarm fails too,
the job fails at once with the same error (its JobEnded Event), never sent to the runner.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    dispatch,
    metric_value,
    ready_deployment,
    status_equals,
)
from tests.support.pool_watch import PoolWatch, failure_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RAISED = "the model file is missing"


async def test_a_setup_fnc_that_raises_is_never_idle_and_is_replaced_at_growing_intervals(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    async with PoolWatch(deployments, "broken") as watch:
        body = await ready_deployment(
            deployments,
            operator,
            k8s,
            livekit,
            "broken",
            "tests.agents.lka_agents:broken",
            runtime="livekit-agents",
            warmPool={"size": 1},
            maxConcurrentJobs=2,
        )
        events = await failure_events(deployments, "broken", 4, timeout=300)
        await eventually(watch.created(5), 120, "the fifth pool pod")
    messages = " | ".join(e.message for e in events)
    assert RAISED in messages
    assert "PrewarmFailed" in messages
    for said in ("replaced in 2s", "replaced in 4s", "replaced in 8s"):
        assert said in messages, messages
    assert watch.most_idle == 0, "a pod whose prewarm failed was counted idle"
    waits = watch.replacement_waits()
    print(f"replacement waits (s): {[round(w, 1) for w in waits]}")
    assert len(waits) >= 4
    # each waits at least its backoff (the poll sees a pod up to 0.2 s late), and they grow
    for wait, delay in zip(waits, (2, 4, 8, 16), strict=False):
        assert wait >= delay - 0.5, waits
    assert waits[2] > waits[0] + 3, waits
    condition = await deployments.condition("broken", "WarmPoolDegraded")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "PrewarmFailed")
    assert RAISED in condition["message"]
    failures = metric_value(
        await operator.metrics(),
        "agent_operator_pool_pod_failures_total",
        namespace=deployments.namespace,
        deployment="broken",
        reason="PrewarmFailed",
    )
    assert failures >= 4

    # a dispatch goes to the cold path; its pod's prewarm fails too: the job fails at once, saying why
    await dispatch(lk, body["spec"]["agentName"], f"room-{uuid.uuid4().hex[:6]}")
    status = await status_equals(deployments, "broken", "jobsFailed", 1, timeout=120)
    assert status["jobsStarted"] == 0

    async def ended() -> Any:
        found = [e for e in await deployments.events("broken") if e.reason in ("JobEnded", "JobFailed")]
        return found[0] if found else None

    event = await eventually(ended, 60, "the job's end event")
    assert "prewarm failed" in event.message
    assert RAISED in event.message


@pytest.mark.parametrize(
    ("entrypoint", "runtime", "error"),
    [
        (
            "tests.agents.lka_agents:hanging",
            "livekit-agents",
            "the prewarm (setup_fnc) did not finish within 2s",
        ),
        ("tests.agents.broken_import:entrypoint", "native", f"RuntimeError: {RAISED}"),
    ],
    ids=["lka-setup-hangs", "native-import-raises"],
)
async def test_a_prewarm_that_hangs_or_an_import_that_raises_is_a_failed_pool_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    entrypoint: str,
    runtime: str,
    error: str,
) -> None:
    name = f"fails-{runtime}"
    async with PoolWatch(deployments, name) as watch:
        await ready_deployment(
            deployments, operator, k8s, livekit, name, entrypoint, runtime=runtime, warmPool={"size": 1}
        )
        events = await failure_events(deployments, name, 2, timeout=240)
    messages = " | ".join(e.message for e in events)
    assert error in messages, messages
    assert watch.most_idle == 0
    condition = await deployments.condition(name, "WarmPoolDegraded")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "PrewarmFailed")
