"""Issue 14, defect 1 (the pool kept across a restart), a race the e2e test
``test_a_pool_older_than_the_start_timeout_survives_an_operator_restart`` hit: an idle pool
pod's runner re-attaches to the restarted operator before the operator listed its pods and
read the LiveKit credentials its signatures are checked with."""

from __future__ import annotations

import pytest

from agent_operator.kube.podspec import (
    ANNOTATION_JOB_ID,
    ANNOTATION_ROOM,
    LABEL_JOB_ID,
    LABEL_STATE,
    LABEL_TEMPLATE,
)
from agent_operator.kube.secrets import Credentials
from agent_operator.vocabulary import PodIdentity
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


async def test_a_rewritten_job_pod_whose_runner_attaches_before_the_pods_are_listed_is_left_alone() -> None:
    """CI (stop 17): the forged pod of ``tests/e2e/test_pod_trust.py`` was deleted. Its runner
    re-attached before the credentials were read; the pod was taken up as a job pod to be
    checked later, and when the check failed its "job" was failed and the pod deleted. A pod
    that cannot be checked yet is not taken: its runner retries, and the listing judges it."""
    h = harness(registered=False)
    body = ours(
        {
            "metadata": {
                "namespace": "ns",
                "name": "voice-pool-2",
                "uid": "pool-2",
                "labels": {"agentoperator.dev/deployment": "voice", LABEL_STATE: "idle"},
            },
            "status": {"phase": "Running"},
        }
    )
    # rewritten by someone with pods/patch: a job for a room of their choosing
    body["metadata"]["labels"].update({LABEL_STATE: "busy", LABEL_JOB_ID: "AJ_forged"})
    body["metadata"]["annotations"].update({ANNOTATION_JOB_ID: "AJ_forged", ANNOTATION_ROOM: "victim"})
    assert h.dep.adoption.adopt(body, jobs_only=True) is False, "not taken before it can be checked"
    h.pods.listed = [body]
    await h.dep.adoption.adopt_existing_pods()
    h.dep.registration.credentials = Credentials("key", "secret")
    await settle()
    assert h.dep.trust.distrusts(PodIdentity("ns", "voice-pool-2", "pool-2"))
    assert "AJ_forged" not in h.dep.jobs
    assert h.pods.deleted == [], "a pod not trusted is left for a person to look at"
    assert h.reports.updates == [], "nothing is reported to LiveKit for a job that is not ours"
