"""The runner pod built from a template."""

from __future__ import annotations

from typing import Any

import pytest

from agent_operator.kube.podspec import (
    LABEL_DEPLOYMENT,
    LABEL_JOB_ID,
    LABEL_STATE,
    JobInfo,
    Owner,
    RunnerSettings,
    build_runner_pod,
)
from agent_operator.spec import DeploymentSpec

pytestmark = pytest.mark.unit

OWNER = Owner("ns", "voice", "uid-1")
RUNNER = RunnerSettings("operator.system:50051", "agentoperator.dev/runner")


def spec(template_spec: dict[str, Any]) -> DeploymentSpec:
    return DeploymentSpec.parse(
        {
            "livekit": {"url": "ws://lk:7880", "credentialsSecretRef": {"name": "lk"}},
            "entrypoint": "agents.voice:entrypoint",
            "template": {"metadata": {"labels": {"team": "a"}}, "spec": template_spec},
        }
    )


def test_cold_pod_carries_identity_not_secrets() -> None:
    pod = build_runner_pod(
        OWNER,
        spec({"containers": [{"name": "agent", "image": "agent:1", "env": [{"name": "X", "value": "1"}]}]}),
        RUNNER,
        "voice-aj-1-abcd",
        JobInfo("AJ_1", "room-1", "AD_1"),
    )
    meta = pod["metadata"]
    assert meta["labels"][LABEL_DEPLOYMENT] == "voice"
    assert meta["labels"][LABEL_JOB_ID] == "AJ_1"
    assert meta["labels"][LABEL_STATE] == "busy"
    assert meta["labels"]["team"] == "a"
    assert meta["annotations"]["agentoperator.dev/room"] == "room-1"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["ownerReferences"][0]["controller"] is True
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENT_OPERATOR_ADDRESS"]["value"] == "operator.system:50051"
    assert env["AGENT_ENTRYPOINT"]["value"] == "agents.voice:entrypoint"
    assert env["AGENT_RUNTIME"]["value"] == "native"
    assert env["AGENT_POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["X"]["value"] == "1"
    text = repr(pod).lower()
    for forbidden in ("token=", "api-secret", "secretkeyref"):
        assert forbidden not in text
    assert pod["spec"]["restartPolicy"] == "Never"


def test_secure_defaults_meet_restricted() -> None:
    pod = build_runner_pod(OWNER, spec({"containers": [{"name": "a", "image": "i"}]}), RUNNER, "p", None)
    ps = pod["spec"]
    assert ps["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 65532,
        "runAsGroup": 65532,  # not gid 0, which the kubelet gives a uid it sets without a group
    }
    assert ps["automountServiceAccountToken"] is False
    sc = ps["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    token = next(v for v in ps["volumes"] if "projected" in v)
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "agentoperator.dev/runner"
    assert pod["metadata"]["labels"][LABEL_STATE] == "idle"
    assert LABEL_JOB_ID not in pod["metadata"]["labels"]


def test_template_overrides_win() -> None:
    template = {
        "restartPolicy": "Always",
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
        "containers": [{"name": "a", "image": "i", "securityContext": {"readOnlyRootFilesystem": False}}],
    }
    pod = build_runner_pod(OWNER, spec(template), RUNNER, "p", None)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert pod["spec"]["securityContext"]["runAsGroup"] == 1000, "the group follows the uid set"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


def test_runner_pods_get_the_operator_ca_only_with_tls() -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    template = {"containers": [{"name": "agent", "image": "agent:1"}]}
    plain = build_runner_pod(OWNER, spec(template), RUNNER, "p1", None)
    plain_env = {e["name"]: e.get("value") for e in plain["spec"]["containers"][0]["env"]}
    assert plain_env["AGENT_OPERATOR_TLS_CA_PEM"] == ""  # set (so envFrom cannot), and empty
    tls = RunnerSettings(RUNNER.operator_address, RUNNER.token_audience, ca)
    pod = build_runner_pod(OWNER, spec(template), tls, "p2", None)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AGENT_OPERATOR_TLS_CA_PEM"] == ca


def test_only_transient_api_failures_are_retried() -> None:
    import aiohttp
    from kubernetes_asyncio.client.exceptions import ApiException

    from agent_operator.kube.pods import transient

    assert transient(ConnectionRefusedError())
    assert transient(TimeoutError())
    assert transient(aiohttp.ServerDisconnectedError())
    for status in (429, 500, 502, 503, 504):
        assert transient(ApiException(status=status))
    for status in (400, 403, 404, 409, 422):
        assert not transient(ApiException(status=status)), "the answer will not change"
    assert not transient(ValueError("bad body"))


def test_the_group_follows_the_runner_containers_uid_and_a_set_group_is_kept() -> None:
    own_uid = {"containers": [{"name": "a", "image": "i", "securityContext": {"runAsUser": 2000}}]}
    pod = build_runner_pod(OWNER, spec(own_uid), RUNNER, "p", None)
    assert "runAsUser" not in pod["spec"]["securityContext"], "the container's uid is not overridden"
    assert pod["spec"]["securityContext"]["runAsGroup"] == 2000
    own_group = {
        "securityContext": {"runAsGroup": 3000},
        "containers": [{"name": "a", "image": "i"}],
    }
    pod = build_runner_pod(OWNER, spec(own_group), RUNNER, "p", None)
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    assert pod["spec"]["securityContext"]["runAsGroup"] == 3000
