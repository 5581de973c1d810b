"""What a template may set in the runner's environment (issue 14, defect 12): the runner's
user settings reach the pod, the operator's wiring is refused by name, and every reserved
name is set by the operator so that envFrom (which env overrides) cannot supply one."""

from __future__ import annotations

from typing import Any

import pytest

from agent_jobrunner.config import USER_SETTINGS, RunnerConfig
from agent_operator.kube.podspec import build_runner_pod
from agent_operator.runner_env import RESERVED
from agent_operator.spec import DeploymentSpec, SpecError
from tests.unit.test_podspec import OWNER, RUNNER
from tests.unit.test_podspec import spec as with_template

pytestmark = pytest.mark.unit


def spec(container: dict[str, Any]) -> DeploymentSpec:
    return with_template({"containers": [{"name": "agent", "image": "i", **container}]})


def runner_env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_the_runners_user_settings_reach_the_pod() -> None:
    env = [
        {"name": "AGENT_LOG_LEVEL", "value": "DEBUG"},
        {"name": "AGENT_REATTACH_WINDOW_SECONDS", "value": "90"},
        {"name": "AGENT_SHUTDOWN_TIMEOUT_SECONDS", "value": "4.5"},
        {"name": "AGENT_MY_OWN", "value": "kept"},  # the agent's own, not the runner's
    ]
    pod = build_runner_pod(OWNER, spec({"env": env}), RUNNER, "p", None)
    got = runner_env(pod)
    assert {n: got[n]["value"] for n in (*USER_SETTINGS, "AGENT_MY_OWN")} == {
        "AGENT_LOG_LEVEL": "DEBUG",
        "AGENT_REATTACH_WINDOW_SECONDS": "90",
        "AGENT_SHUTDOWN_TIMEOUT_SECONDS": "4.5",
        "AGENT_MY_OWN": "kept",
    }


def test_the_runner_reads_them_from_the_pod_it_gets() -> None:
    """The pod's literal env, read as the runner reads it: the settings take effect."""
    env = [
        {"name": "AGENT_LOG_LEVEL", "value": "debug"},
        {"name": "AGENT_SHUTDOWN_TIMEOUT_SECONDS", "value": "3"},
    ]
    pod = build_runner_pod(OWNER, spec({"env": env}), RUNNER, "p", None)
    fields = {"AGENT_POD_NAME": "p", "AGENT_POD_NAMESPACE": "ns", "AGENT_POD_UID": "u"}
    literal = {n: e["value"] for n, e in runner_env(pod).items() if "value" in e}
    config = RunnerConfig.from_env({**literal, **fields})
    assert config.log_level == 10
    assert config.shutdown_timeout_seconds == 3.0
    assert config.tls_ca_pem is None  # set empty: no TLS


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_a_reserved_name_in_the_template_is_refused_by_name(name: str) -> None:
    with pytest.raises(SpecError, match=rf"env\[0\] {name}: reserved for the operator"):
        spec({"env": [{"name": name, "value": "x"}]})


def test_a_reserved_name_from_a_secret_is_refused_too() -> None:
    source = {"secretKeyRef": {"name": "s", "key": "k"}}
    with pytest.raises(SpecError, match="AGENT_OPERATOR_ADDRESS: reserved"):
        spec({"env": [{"name": "X", "value": "1"}, {"name": "AGENT_OPERATOR_ADDRESS", "valueFrom": source}]})


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("AGENT_LOG_LEVEL", "LOUD", "must be one of"),
        ("AGENT_REATTACH_WINDOW_SECONDS", "soon", "must be a number of seconds"),
        ("AGENT_SHUTDOWN_TIMEOUT_SECONDS", "0", "must be a positive number"),
    ],
)
def test_a_bad_user_setting_is_refused_when_the_spec_is_parsed(name: str, value: str, problem: str) -> None:
    with pytest.raises(SpecError, match=rf"{name}: {problem}"):
        spec({"env": [{"name": name, "value": value}]})


def test_every_reserved_name_is_set_by_the_operator_so_env_from_cannot_supply_it() -> None:
    """Kubernetes gives env precedence over envFrom: each reserved name the operator sets
    (the unused ones empty) shadows the same key in any envFrom source."""
    pod = build_runner_pod(OWNER, spec({"envFrom": [{"configMapRef": {"name": "cm"}}]}), RUNNER, "p", None)
    container = pod["spec"]["containers"][0]
    assert set(RESERVED) <= set(runner_env(pod))
    assert container["envFrom"] == [{"configMapRef": {"name": "cm"}}]
