"""What a pod template may put in the runner container's environment (pure).

The runner's documented user settings (``agent_jobrunner.config.USER_SETTINGS``) may be
set, and are checked when the spec is parsed. The operator's own wiring of the pod (where
the operator is, who the pod is, its credentials, its TLS trust, what it runs) is
reserved: a template that sets one is refused. The operator sets every reserved name on
every runner container, the unused ones empty, because Kubernetes gives ``env`` precedence
over ``envFrom``: a ConfigMap or Secret in ``envFrom`` can never supply one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_jobrunner.config import USER_SETTINGS, ConfigError, check_user_setting

# the operator's wiring, each with what it is (for the error a user sees)
RESERVED: Mapping[str, str] = {
    "AGENT_OPERATOR_ADDRESS": "the operator's runner address",
    "AGENT_OPERATOR_TLS_CA": "the runner stream's TLS trust",
    "AGENT_OPERATOR_TLS_CA_PEM": "the runner stream's TLS trust",
    "AGENT_POD_NAME": "the pod's identity",
    "AGENT_POD_NAMESPACE": "the pod's identity",
    "AGENT_POD_UID": "the pod's identity",
    "AGENT_RUNNER_TOKEN_PATH": "the runner's credentials",
    "AGENT_ENTRYPOINT": "the spec's entrypoint (set spec.entrypoint)",
    "AGENT_RUNTIME": "the spec's runtime (set spec.runtime)",
}

__all__ = ["RESERVED", "USER_SETTINGS", "EnvError", "check_runner_env"]


class EnvError(ValueError):
    """A template's runner environment that cannot be used; names the variable."""


def check_runner_env(container: Mapping[str, Any]) -> None:
    """Raise :class:`EnvError` for a reserved name, or a user setting with a bad value."""
    for index, item in enumerate(container.get("env") or []):
        name = str(item.get("name", ""))
        where = f"template.spec.containers[0].env[{index}] {name}"
        if name in RESERVED:
            reserved = f"reserved for the operator ({RESERVED[name]}); a template may not set it"
            raise EnvError(f"{where}: {reserved}")
        if name in USER_SETTINGS and "value" in item:
            try:
                check_user_setting(name, str(item["value"]))
            except ConfigError as exc:
                raise EnvError(f"{where}: {exc.problem}") from None
