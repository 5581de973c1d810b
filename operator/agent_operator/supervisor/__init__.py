"""Runner supervision: the operator's end of the gRPC stream to each job pod's runner.

Layer rule: this package knows gRPC and the runner protocol, nothing of Kubernetes or
LiveKit's worker protocol; authentication, pod termination and job outcomes are injected.
"""

from agent_operator.supervisor.heartbeat import HeartbeatMonitor, HeartbeatSettings
from agent_operator.supervisor.service import Supervisor
from agent_operator.supervisor.settings import SupervisorSettings
from agent_operator.supervisor.types import (
    Authenticator,
    AuthError,
    AuthUnavailable,
    DeploymentRef,
    JobOutcome,
    JobRecord,
    NotServingRunners,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
    SupervisorListener,
    Terminator,
)

__all__ = [
    "AuthError",
    "AuthUnavailable",
    "Authenticator",
    "DeploymentRef",
    "HeartbeatMonitor",
    "HeartbeatSettings",
    "JobOutcome",
    "JobRecord",
    "NotServingRunners",
    "OutcomeStatus",
    "PodIdentity",
    "RunnerBinding",
    "Supervisor",
    "SupervisorListener",
    "SupervisorSettings",
    "Terminator",
]
