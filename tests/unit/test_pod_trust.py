"""Signed pod records: what verifies, what a patch breaks, and the structural checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.kube import pod_trust
from agent_operator.kube.podspec import (
    ANNOTATION_JOB_ID,
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_JOB_ID,
    LABEL_STATE,
    LABEL_TEMPLATE,
    JobInfo,
    Owner,
    RunnerSettings,
    build_runner_pod,
    job_annotations,
)
from agent_operator.kube.secrets import Credentials
from agent_operator.spec import DeploymentSpec

pytestmark = pytest.mark.unit

OWNER = Owner("ns", "voice", "uid-owner")
KEY = pod_trust.signing_key("the-api-secret")
SPEC = DeploymentSpec.parse(
    {
        "livekit": {"url": "ws://lk:7880", "credentialsSecretRef": {"name": "lk"}},
        "entrypoint": "agents.voice:entrypoint",
        "template": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
    }
)
JOB = JobInfo("AJ_1", "room-1", "AD_1", "c3RhcnQ=")


def found(body: dict[str, Any], uid: str = "uid-pod") -> dict[str, Any]:
    """The pod as the API server returns it: the body plus what the server adds."""
    pod = copy.deepcopy(body)
    pod["metadata"].update(uid=uid, resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z")
    return pod


def signed_cold_pod() -> dict[str, Any]:
    body = build_runner_pod(OWNER, SPEC, RunnerSettings("op:50051", "aud"), "voice-aj-1-abcd", JOB)
    pod_trust.sign_pod(KEY, body)
    return found(body)


def test_a_signed_pod_is_trusted() -> None:
    assert pod_trust.untrusted(signed_cold_pod(), OWNER.uid, KEY) == ""


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("annotations", ANNOTATION_START, "Zm9yZ2Vk"),
        ("annotations", ANNOTATION_ROOM, "another-room"),
        ("labels", LABEL_STATE, "idle"),
        ("labels", LABEL_TEMPLATE, "0000"),
        ("name", "", "voice-other"),
    ],
)
def test_rewriting_anything_signed_breaks_the_signature(where: str, key: str, value: str) -> None:
    pod = signed_cold_pod()
    if where == "name":
        pod["metadata"]["name"] = value
    else:
        pod["metadata"][where][key] = value
    assert "signature does not match" in pod_trust.untrusted(pod, OWNER.uid, KEY)


def test_removing_a_signed_annotation_breaks_the_signature() -> None:
    pod = signed_cold_pod()
    del pod["metadata"]["annotations"][ANNOTATION_START]
    assert "signature does not match" in pod_trust.untrusted(pod, OWNER.uid, KEY)


def test_what_is_not_signed_may_change() -> None:
    pod = signed_cold_pod()
    pod["metadata"]["labels"]["team"] = "b"
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "now"
    assert pod_trust.untrusted(pod, OWNER.uid, KEY) == ""


def test_another_secret_does_not_verify() -> None:
    assert "signature does not match" in pod_trust.untrusted(
        signed_cold_pod(), OWNER.uid, pod_trust.signing_key("another-secret")
    )


def test_an_unsigned_pod_is_not_trusted() -> None:
    pod = signed_cold_pod()
    del pod["metadata"]["annotations"][pod_trust.ANNOTATION_SIGNATURE]
    assert pod_trust.untrusted(pod, OWNER.uid, KEY) == "it carries no signature"


def test_the_controller_must_be_the_deployment() -> None:
    pod = signed_cold_pod()
    assert "controller ownerReference" in pod_trust.untrusted(pod, "uid-of-another-deployment", KEY)
    pod["metadata"]["ownerReferences"][0]["controller"] = False
    assert "(none)" in pod_trust.untrusted(pod, OWNER.uid, None)


def test_job_label_and_annotation_must_agree_even_without_a_key() -> None:
    pod = signed_cold_pod()
    pod["metadata"]["labels"][LABEL_JOB_ID] = "AJ_other"
    assert "disagree" in pod_trust.untrusted(pod, OWNER.uid, None)
    assert pod_trust.untrusted(signed_cold_pod(), OWNER.uid, None) == ""


def test_a_pool_pod_marked_busy_verifies_with_the_busy_signature() -> None:
    """``PodManager.mark_busy`` merges labels and annotations into an idle pool pod: the
    signature it writes must be that of the pod it results in."""
    body = build_runner_pod(OWNER, SPEC, RunnerSettings("op:50051", "aud"), "voice-pool-abc", None)
    pod_trust.sign_pod(KEY, body)
    pod = found(body)
    assert pod_trust.untrusted(pod, OWNER.uid, KEY) == ""
    meta = pod["metadata"]
    meta["labels"].update({LABEL_STATE: "busy", LABEL_JOB_ID: JOB.job_id})
    meta["annotations"].update(job_annotations(JOB))
    assert "signature does not match" in pod_trust.untrusted(pod, OWNER.uid, KEY), (
        "the idle one no longer fits"
    )
    meta["annotations"][pod_trust.ANNOTATION_SIGNATURE] = pod_trust.busy_signature(
        KEY, "ns", "voice-pool-abc", OWNER.uid, OWNER.name, SPEC.template_hash(), JOB
    )
    assert pod_trust.untrusted(pod, OWNER.uid, KEY) == ""
    assert meta["annotations"][ANNOTATION_JOB_ID] == meta["labels"][LABEL_JOB_ID]


def test_the_key_is_not_the_secret() -> None:
    assert b"the-api-secret" not in KEY
    assert len(KEY) == 32


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, bool]] = []

    def __call__(self, reason: str, message: str, warning: bool) -> None:
        self.recorded.append((reason, message, warning))


def test_deployment_trust_reports_an_untrusted_pod_once() -> None:
    events = Events()
    trust = DeploymentTrust(OWNER, {"deployment": "ns/voice"}, events, lambda: None)
    pod = signed_cold_pod()
    pod["metadata"]["annotations"][ANNOTATION_ROOM] = "victim"
    assert trust.check(pod, KEY) == "untrusted"
    assert trust.check(pod, KEY) == "untrusted"
    assert len(events.recorded) == 1
    reason, message, warning = events.recorded[0]
    assert (reason, warning) == ("PodNotTrusted", True)
    assert "voice-aj-1-abcd" in message
    assert "no token" in message


def test_deployment_trust_without_a_key() -> None:
    """The LiveKit Secret unreadable at start: a job pod is taken (its runner may re-attach;
    it is checked again before anything is minted for it); an idle pod cannot be checked."""
    events = Events()
    trust = DeploymentTrust(OWNER, {}, events, lambda: None)
    assert trust.check(signed_cold_pod(), None) == "trusted"
    idle = build_runner_pod(OWNER, SPEC, RunnerSettings("op:50051", "aud"), "voice-pool-abc", None)
    assert trust.check(found(idle), None) == "unverified"
    assert events.recorded == []


def test_deployment_trust_signs_what_it_creates_once_it_has_credentials() -> None:
    credentials: Credentials | None = None
    trust = DeploymentTrust(OWNER, {}, Events(), lambda: credentials)
    body = build_runner_pod(OWNER, SPEC, RunnerSettings("op:50051", "aud"), "voice-pool-abc", None)
    assert pod_trust.ANNOTATION_SIGNATURE not in trust.seal(copy.deepcopy(body))["metadata"]["annotations"]
    credentials = Credentials("key", "the-api-secret")
    assert trust.check(found(trust.seal(body)), KEY) == "trusted"
