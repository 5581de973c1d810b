"""Issue 14, defect 1 (the pool kept across a restart), a race the e2e test
``test_a_pool_older_than_the_start_timeout_survives_an_operator_restart`` hit: an idle pool
pod's runner re-attaches to the restarted operator before the operator listed its pods and
read the LiveKit credentials its signatures are checked with."""

from __future__ import annotations

import pytest

from agent_operator.kube.podspec import LABEL_STATE, LABEL_TEMPLATE
from tests.support.deployment_fakes import harness, ours, settle

pytestmark = pytest.mark.unit


async def test_a_pool_runner_attaching_before_the_pods_are_listed_does_not_get_its_pod_replaced() -> None:
    h = harness(registered=False)  # just restarted: no credentials read yet
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    body = ours(
        {
            "metadata": {
                "namespace": "ns",
                "name": "voice-pool-1",
                "uid": "pool-1",
                "labels": {
                    "agentoperator.dev/deployment": "voice",
                    LABEL_STATE: "idle",
                    LABEL_TEMPLATE: current,
                },
            },
            "status": {"phase": "Running"},
        }
    )
    # what runtime.resolve does for a runner the supervisor was not told about yet
    assert h.dep.adoption.adopt(body, jobs_only=True) is False, "not taken before it can be checked"
    await settle()
    assert h.pods.deleted == [], "an idle pod of ours was deleted for arriving early"
    h.pods.listed = [body]
    await h.dep.adoption.adopt_existing_pods()  # the listing, with the credentials read for it
    assert "pool-1" in h.dep.pool.pods
    assert h.pods.deleted == []
