"""The runner's configuration from environment variables."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent_jobrunner.config import DEFAULT_TOKEN_PATH, ConfigError, RunnerConfig

pytestmark = pytest.mark.unit

BASE = {
    "AGENT_OPERATOR_ADDRESS": "agent-operator.system.svc:7443",
    "AGENT_POD_NAME": "agent-abc",
    "AGENT_POD_NAMESPACE": "voice",
    "AGENT_POD_UID": "5f2b8c1e-0000-4000-8000-000000000001",
    "AGENT_ENTRYPOINT": "my_agent.main:entrypoint",
}


def test_minimal_environment_gets_the_defaults() -> None:
    config = RunnerConfig.from_env(BASE)
    assert config.operator_address == "agent-operator.system.svc:7443"
    assert (config.pod_namespace, config.pod_name) == ("voice", "agent-abc")
    assert config.pod_uid == BASE["AGENT_POD_UID"]
    assert config.entrypoint == "my_agent.main:entrypoint"
    assert config.token_path == Path(DEFAULT_TOKEN_PATH)
    assert config.log_level == logging.INFO
    assert config.reattach_window_seconds == 60.0
    assert config.shutdown_timeout_seconds == 10.0
    assert config.tls_ca_path is None
    assert config.runtime == "native"


def test_every_setting() -> None:
    config = RunnerConfig.from_env(
        {
            **BASE,
            "AGENT_RUNNER_TOKEN_PATH": "/tmp/token",
            "AGENT_LOG_LEVEL": "debug",
            "AGENT_REATTACH_WINDOW_SECONDS": "2.5",
            "AGENT_OPERATOR_TLS_CA": "/etc/ca.pem",
            "AGENT_SHUTDOWN_TIMEOUT_SECONDS": "30",
            "AGENT_RUNTIME": "livekit-agents",
        }
    )
    assert config.runtime == "livekit-agents"
    assert config.token_path == Path("/tmp/token")
    assert config.log_level == logging.DEBUG
    assert config.reattach_window_seconds == 2.5
    assert config.tls_ca_path == Path("/etc/ca.pem")
    assert config.shutdown_timeout_seconds == 30.0


def test_config_is_frozen() -> None:
    config = RunnerConfig.from_env(BASE)
    with pytest.raises(AttributeError):
        config.pod_name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "missing",
    ["AGENT_OPERATOR_ADDRESS", "AGENT_POD_NAME", "AGENT_POD_NAMESPACE", "AGENT_POD_UID", "AGENT_ENTRYPOINT"],
)
def test_required_variables(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        RunnerConfig.from_env(env)
    assert err.value.variable == missing
    assert missing in str(err.value)
    # blank counts as missing
    with pytest.raises(ConfigError, match=missing):
        RunnerConfig.from_env({**BASE, missing: "  "})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENT_OPERATOR_ADDRESS", "no-port"),
        ("AGENT_OPERATOR_ADDRESS", "host:port"),
        ("AGENT_OPERATOR_ADDRESS", "host:70000"),
        ("AGENT_OPERATOR_ADDRESS", ":7443"),
        ("AGENT_ENTRYPOINT", "my_agent.main"),
        ("AGENT_ENTRYPOINT", "my_agent.main:"),
        ("AGENT_ENTRYPOINT", "my-agent:entry"),
        ("AGENT_LOG_LEVEL", "LOUD"),
        ("AGENT_RUNTIME", "livekit"),
        ("AGENT_REATTACH_WINDOW_SECONDS", "soon"),
        ("AGENT_REATTACH_WINDOW_SECONDS", "0"),
        ("AGENT_REATTACH_WINDOW_SECONDS", "-5"),
        ("AGENT_REATTACH_WINDOW_SECONDS", "inf"),
        ("AGENT_SHUTDOWN_TIMEOUT_SECONDS", "nan"),
        ("AGENT_OPERATOR_TLS_CA_PEM", "/etc/ca.pem"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunnerConfig.from_env({**BASE, variable: value})
    assert err.value.variable == variable
    assert str(err.value).startswith(f"{variable}: ")


def test_ipv6_address_is_accepted() -> None:
    assert (
        RunnerConfig.from_env({**BASE, "AGENT_OPERATOR_ADDRESS": "[::1]:7443"}).operator_address
        == "[::1]:7443"
    )


def test_cli_exits_2_with_the_variable_on_stderr() -> None:
    env = {"PATH": "/usr/bin:/bin", **{k: v for k, v in BASE.items() if k != "AGENT_POD_UID"}}
    out = subprocess.run(
        [sys.executable, "-m", "agent_jobrunner.cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "AGENT_POD_UID" in out.stderr
    assert out.stdout == ""


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent_jobrunner.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert out.stdout.startswith("agent-jobrunner ")


def test_the_operator_ca_can_come_inline() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    config = RunnerConfig.from_env({**BASE, "AGENT_OPERATOR_TLS_CA_PEM": pem})
    assert config.tls_ca_pem == pem.encode()
    assert RunnerConfig.from_env(BASE).tls_ca_pem is None
