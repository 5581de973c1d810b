"""Idle warm-pool pods that the real node cannot start: an image that cannot be pulled, a pod no
node can take. Each is never counted idle, gets a ``PoolPodFailed`` Event naming the reason and
what to fix, makes ``WarmPoolDegraded`` say so, and is replaced after growing waits, not in a
hot loop. The pods are watched, not polled: one that no node can take is gone within
milliseconds of its creation.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support import cannot_start
from tests.support.operator import Deployments, OperatorProcess, ready_deployment, reasons_counted
from tests.support.pool_watch import PoolWatch, failure_events

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(400),
]


@cannot_start.each_case
async def test_an_idle_pod_that_cannot_start_is_replaced_with_backoff_saying_what_to_fix(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    case: str,
    agent: dict[str, Any],
    reasons: tuple[str, ...],
    fix: str,
) -> None:
    name = f"pool-{case}"
    async with PoolWatch(deployments, name) as watch:
        await ready_deployment(
            deployments,
            operator,
            k8s,
            livekit,
            name,
            "tests.agents.node_agents:report_sandbox",
            container=agent,
            warmPool={"size": 1},
        )
        events = await failure_events(deployments, name, 3, timeout=240)
        await eventually(watch.created(4), 120, "the fourth pool pod")
    messages = " | ".join(e.message for e in events)
    assert any(reason in messages for reason in reasons), messages
    assert fix in messages
    for said in ("replaced in 2s", "replaced in 4s", "replaced in 8s"):
        assert said in messages, messages
    assert watch.most_idle == 0
    waits = watch.replacement_waits()
    print(f"replacement waits ({case}, s): {[round(w, 1) for w in waits]}")
    for wait, delay in zip(waits, (2, 4, 8), strict=False):
        assert wait >= delay - 0.5, waits
    condition = await deployments.condition(name, "WarmPoolDegraded")
    assert condition is not None
    assert condition["status"] == "True"
    assert condition["reason"] in reasons
    metrics = await operator.metrics()
    assert reasons_counted(metrics, "agent_operator_pool_pod_failures_total", name, reasons) >= 3
