"""Whether a deployment can serve, and why not: a spec it cannot run, credentials it cannot
use, the state of its LiveKit connection. Its status conditions are derived from these
(``conditions``, a pure function); the deployment's jobs and pool are not part of it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent_operator import metrics
from agent_operator.conditions import DeploymentState, conditions
from agent_operator.kube.status import Condition
from agent_operator.pool_backoff import PoolFailure
from agent_operator.supervisor import OutcomeStatus

log = logging.getLogger("agent_operator.deployment")

INVALID_SPEC = "InvalidSpec"


class Readiness:
    def __init__(
        self,
        fields: dict[str, str],
        labels: tuple[str, str],
        event: Callable[..., None],
        changed: Callable[[], None],
    ) -> None:
        self._fields = fields
        self._labels = labels  # the metrics' namespace and deployment
        self._event = event
        self._changed = changed
        self.blocked = ""  # why this deployment cannot serve (spec or credentials)
        self.blocked_reason = ""
        self.connect_error = ""  # why the last connection to LiveKit failed
        self._registered_once = False

    @property
    def invalid_spec(self) -> str:
        """The current spec's error ("" when it can be served)."""
        return self.blocked if self.blocked_reason == INVALID_SPEC else ""

    def spec_checked(self, error: str) -> None:
        """A new generation of the spec, and what was wrong with it ("" for nothing)."""
        if error:
            self.block(INVALID_SPEC, error)
        elif self.blocked_reason == INVALID_SPEC:
            self.blocked = self.blocked_reason = ""

    def block(self, reason: str, message: str) -> None:
        if (self.blocked_reason, self.blocked) != (reason, message):
            log.warning("deployment cannot serve: %s", message, extra=self._fields)
            self._event("NotReady" if reason != INVALID_SPEC else INVALID_SPEC, message, warning=True)
        self.blocked_reason, self.blocked = reason, message
        self._changed()

    def unblock_credentials(self) -> None:
        if self.blocked_reason not in ("", INVALID_SPEC):
            log.info("credentials usable again", extra=self._fields)
            self.blocked = self.blocked_reason = ""

    def registered(self, worker_id: str) -> None:
        first, self._registered_once = not self._registered_once, True
        self.connect_error = ""
        metrics.WORKER_CONNECTED.labels(*self._labels).set(1)
        self._event(
            "WorkerRegistered", f"registered with LiveKit as worker {worker_id}" + ("" if first else " again")
        )
        self._changed()

    def disconnected(self, reason: str) -> None:
        self.connect_error = reason
        metrics.WORKER_CONNECTED.labels(*self._labels).set(0)
        metrics.WORKER_RECONNECTS.labels(*self._labels).inc()
        self._changed()

    def conditions(
        self,
        worker_id: str,
        draining: bool,
        recent: tuple[OutcomeStatus, ...],
        pool_failure: PoolFailure | None,
    ) -> list[Condition]:
        return conditions(
            DeploymentState(
                worker_id=worker_id,
                connect_error=self.connect_error,
                blocked_reason=self.blocked_reason,
                blocked=self.blocked,
                draining=draining,
                recent=recent,
                pool_failure=pool_failure,
            )
        )
