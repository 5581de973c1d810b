"""The runner's configuration, read from environment variables (set by the pod spec)."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_TOKEN_PATH = "/var/run/secrets/agentoperator.dev/runner/token"  # noqa: S105 (a path)
DEFAULT_REATTACH_WINDOW_SECONDS = 60.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 10.0

_ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# native: agent_jobrunner's own JobContext; livekit-agents: livekit-agents' job runtime
RUNTIMES = ("native", "livekit-agents")


class ConfigError(ValueError):
    """A missing or invalid environment variable; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    operator_address: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    entrypoint: str
    token_path: Path = Path(DEFAULT_TOKEN_PATH)
    log_level: int = logging.INFO
    reattach_window_seconds: float = DEFAULT_REATTACH_WINDOW_SECONDS
    tls_ca_path: Path | None = None
    tls_ca_pem: bytes | None = None  # the CA itself, as the operator puts it in the pod spec
    shutdown_timeout_seconds: float = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    runtime: str = "native"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerConfig:
        """Parse the ``AGENT_*`` variables; raises :class:`ConfigError` naming the bad one."""
        tls_ca = _optional(env, "AGENT_OPERATOR_TLS_CA")
        return cls(
            operator_address=_address(env, "AGENT_OPERATOR_ADDRESS"),
            pod_name=_required(env, "AGENT_POD_NAME"),
            pod_namespace=_required(env, "AGENT_POD_NAMESPACE"),
            pod_uid=_required(env, "AGENT_POD_UID"),
            entrypoint=_entrypoint(env, "AGENT_ENTRYPOINT"),
            token_path=Path(_optional(env, "AGENT_RUNNER_TOKEN_PATH") or DEFAULT_TOKEN_PATH),
            log_level=_log_level(env, "AGENT_LOG_LEVEL"),
            reattach_window_seconds=_seconds(
                env, "AGENT_REATTACH_WINDOW_SECONDS", DEFAULT_REATTACH_WINDOW_SECONDS
            ),
            tls_ca_path=Path(tls_ca) if tls_ca else None,
            tls_ca_pem=_pem(env, "AGENT_OPERATOR_TLS_CA_PEM"),
            shutdown_timeout_seconds=_seconds(
                env, "AGENT_SHUTDOWN_TIMEOUT_SECONDS", DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
            ),
            runtime=_runtime(env, "AGENT_RUNTIME"),
        )


# what a user may set in the pod template (the rest is the operator's wiring of the pod)
USER_SETTINGS = ("AGENT_LOG_LEVEL", "AGENT_REATTACH_WINDOW_SECONDS", "AGENT_SHUTDOWN_TIMEOUT_SECONDS")


def check_user_setting(name: str, value: str) -> None:
    """Raise :class:`ConfigError` if ``value`` is not valid for the user setting ``name``."""
    env = {name: value}
    if name == "AGENT_LOG_LEVEL":
        _log_level(env, name)
    elif name in USER_SETTINGS:
        _seconds(env, name, 0.0)
    else:
        raise ConfigError(name, f"is not a user setting (those are {', '.join(USER_SETTINGS)})")


def _pem(env: Mapping[str, str], name: str) -> bytes | None:
    value = _optional(env, name)
    if value is None:
        return None
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise ConfigError(name, "must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
    return (value + "\n").encode()


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _required(env: Mapping[str, str], name: str) -> str:
    value = _optional(env, name)
    if value is None:
        raise ConfigError(name, "is required but not set")
    return value


def _address(env: Mapping[str, str], name: str) -> str:
    value = _required(env, name)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, f"must be host:port, got {value!r}")
    return value


def _entrypoint(env: Mapping[str, str], name: str) -> str:
    value = _required(env, name)
    if not _ENTRYPOINT_RE.match(value):
        raise ConfigError(name, f"must be package.module:function, got {value!r}")
    return value


def _runtime(env: Mapping[str, str], name: str) -> str:
    value = _optional(env, name) or "native"
    if value not in RUNTIMES:
        raise ConfigError(name, f"must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return value


def _log_level(env: Mapping[str, str], name: str) -> int:
    value = (_optional(env, name) or "INFO").upper()
    if value == "WARN":
        value = "WARNING"
    if value not in _LOG_LEVELS:
        raise ConfigError(name, f"must be one of {', '.join(_LOG_LEVELS)}, got {env.get(name)!r}")
    level: int = getattr(logging, value)
    return level


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(name, f"must be a positive number of seconds, got {raw!r}")
    return value
