"""A deployment's status conditions, as a pure function of what it knows (tested without
servers): Registered, Ready, Degraded and WarmPoolDegraded."""

from __future__ import annotations

import dataclasses

from agent_operator.kube.status import Condition
from agent_operator.pool_backoff import PoolFailure
from agent_operator.supervisor import OutcomeStatus


@dataclasses.dataclass(frozen=True)
class DeploymentState:
    worker_id: str  # "" while not registered
    connect_error: str  # why the last connection to LiveKit failed
    blocked_reason: str  # e.g. InvalidSpec, SecretMissing: the deployment cannot serve
    blocked: str  # the message that goes with it
    draining: bool
    recent: tuple[OutcomeStatus, ...]  # the last outcomes, oldest first
    pool_failure: PoolFailure | None = None  # the last pool pod failure, until one attaches


def conditions(state: DeploymentState) -> list[Condition]:
    registered = bool(state.worker_id)
    if state.blocked:
        reg = Condition("Registered", False, state.blocked_reason, state.blocked)
    elif registered:
        reg = Condition("Registered", True, "WorkerRegistered", f"worker {state.worker_id}")
    elif state.connect_error:
        reg = Condition("Registered", False, "LiveKitUnreachable", state.connect_error)
    else:
        reg = Condition("Registered", False, "Connecting", "connecting to LiveKit")
    if state.draining:
        ready = Condition("Ready", False, "Draining", "the deployment is being deleted")
    elif registered and not state.blocked:
        ready = Condition("Ready", True, "Ready", "accepting jobs")
    else:
        ready = Condition("Ready", False, reg.reason, reg.message)
    failed = sum(1 for s in state.recent if s is not OutcomeStatus.SUCCESS)
    if len(state.recent) >= 3 and failed * 2 >= len(state.recent):
        degraded = Condition(
            "Degraded", True, "JobsFailing", f"{failed} of the last {len(state.recent)} jobs failed"
        )
    else:
        degraded = Condition("Degraded", False, "JobsHealthy", "")
    return [reg, ready, degraded, warm_pool(state.pool_failure)]


def warm_pool(failure: PoolFailure | None) -> Condition:
    """True while pool pods fail before they serve (the reason is the last failure's)."""
    if failure is None:
        return Condition("WarmPoolDegraded", False, "PoolHealthy", "")
    return Condition(
        "WarmPoolDegraded",
        True,
        failure.reason,
        f"{failure.in_a_row} pool pods failed in a row, the last: {failure.message}; "
        f"the next waits {failure.delay:.0f}s",
    )
