"""AgentDeployment spec parsing."""

from __future__ import annotations

from typing import Any

import pytest

from agent_operator.spec import DeploymentSpec, SpecError, parse_duration

pytestmark = pytest.mark.unit


LIVEKIT: dict[str, Any] = {"url": "ws://lk:7880", "credentialsSecretRef": {"name": "lk"}}


def minimal(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "livekit": dict(LIVEKIT),
        "entrypoint": "agents.voice:entrypoint",
        "template": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
    }
    spec.update(over)
    return spec


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2.5s", 2.5), ("10m", 600), ("1h30m", 5400), (3, 3.0)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "5d", "1m 30s"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(SpecError, match="drainTimeout"):
        parse_duration(text, "drainTimeout")


def test_defaults() -> None:
    spec = DeploymentSpec.parse(minimal())
    assert spec.max_concurrent_jobs == 10
    assert spec.heartbeat.ping_interval == 2.5
    assert spec.heartbeat.ping_timeout == 60
    assert spec.identity_template == "agent-{job_id}"
    assert spec.credentials.api_key_key == "api-key"
    assert spec.drain_timeout == 600
    assert spec.warm_pool_size == 0
    assert spec.target_load == 0.7
    assert spec.runtime == "native"


def test_runtime_livekit_agents_is_part_of_the_pod_template_hash() -> None:
    native = DeploymentSpec.parse(minimal())
    lka = DeploymentSpec.parse(minimal(runtime="livekit-agents"))
    assert lka.runtime == "livekit-agents"
    assert lka.template_hash() != native.template_hash()
    # an explicit "native" is the default: pods made before the field existed stay current
    assert DeploymentSpec.parse(minimal(runtime="native")).template_hash() == native.template_hash()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"entrypoint": "no-colon"}, "entrypoint"),
        ({"maxConcurrentJobs": -1}, "maxConcurrentJobs"),
        ({"livekit": {"url": "ftp://x", "credentialsSecretRef": {"name": "a"}}}, "livekit.url"),
        ({"livekit": {"url": "ws://x"}}, "credentialsSecretRef"),
        ({"heartbeat": {"pingInterval": "90s"}}, "shorter than"),
        ({"template": {"spec": {"containers": []}}}, "containers"),
        ({"warmPool": {"size": 11}}, "warmPool.size"),
        ({"workerType": "job"}, "workerType"),
        ({"participant": {"identityTemplate": "agent-{job_id"}}, "participant.identityTemplate"),
        ({"participant": {"nameTemplate": "{caller}"}}, r"participant.nameTemplate: .*unknown field"),
        ({"runtime": "livekit"}, "runtime"),
        (
            {"livekit": {"url": "ws://x", "credentialsSecretRef": {"name": "a"}, "targetLoad": 0}},
            "targetLoad",
        ),
        (
            {"livekit": {"url": "ws://x", "credentialsSecretRef": {"name": "a"}, "targetLoad": 1.5}},
            "targetLoad",
        ),
        (
            {"livekit": {"url": "ws://x", "credentialsSecretRef": {"name": "a"}, "targetLoad": "x"}},
            "targetLoad",
        ),
    ],
)
def test_invalid_specs_explain_themselves(over: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        DeploymentSpec.parse(minimal(**over))


def test_registration_key_changes_only_with_livekit_facing_fields() -> None:
    base = DeploymentSpec.parse(minimal())
    assert base.registration_key() == DeploymentSpec.parse(minimal(maxConcurrentJobs=3)).registration_key()
    assert base.registration_key() != DeploymentSpec.parse(minimal(agentName="other")).registration_key()
    assert base.template_hash() == DeploymentSpec.parse(minimal(maxConcurrentJobs=3)).template_hash()
    changed = minimal(template={"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}})
    assert base.template_hash() != DeploymentSpec.parse(changed).template_hash()
