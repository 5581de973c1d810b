"""The words every layer shares: which pod, which deployment, and a runner's timeouts.

At the bottom of the import graph, so the layers (worker protocol, supervision, Kubernetes
I/O) speak of the same things without importing each other.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PodIdentity:
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class DeploymentRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class HeartbeatSettings:
    """The four timeouts of a runner session (seconds); each settable per AgentDeployment."""

    # from assignment until the runner answers StartJobRequest (attach included: on the
    # cold path this covers the pod's scheduling and start)
    start_timeout: float = 60.0
    ping_interval: float = 2.5
    # no pong for this long: the runner is unresponsive and its pod is deleted
    ping_timeout: float = 60.0
    # a pong later than this is logged and counted as a high ping
    high_ping_threshold: float = 0.5

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"heartbeat {field.name} must be > 0, got {value!r}")
        if self.ping_interval >= self.ping_timeout:
            raise ValueError(
                f"heartbeat ping_interval ({self.ping_interval}s) must be shorter than "
                f"ping_timeout ({self.ping_timeout}s)"
            )


class AuthError(Exception):
    """A runner's credential was refused; the message says why (never the credential)."""


class AuthUnavailable(Exception):
    """The credential could not be checked right now (the authority unreachable or
    overloaded): not a refusal, the runner should try again."""
