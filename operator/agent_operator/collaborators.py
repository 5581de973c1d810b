"""What a deployment works with, passed in explicitly (no reaching through the operator).

Each is a protocol, met in the operator by the Kubernetes and supervisor layers and in the
unit tests by small fakes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from agent_jobrunner.protocol import pb
from agent_operator.handover import Handover
from agent_operator.kube.podspec import JobInfo, Owner, RunnerSettings
from agent_operator.kube.secrets import Credentials
from agent_operator.spec import SecretRef
from agent_operator.supervisor import JobOutcome, JobRecord, RunnerBinding
from agent_operator.vocabulary import HeartbeatSettings, PodIdentity


class Pods(Protocol):
    async def create(
        self, pod: dict[str, object], retry_for: float = 0.0, log_fields: Mapping[str, str] | None = None
    ) -> PodIdentity: ...

    async def delete(self, pod: PodIdentity, grace_seconds: int | None = None) -> None: ...

    async def mark_busy(self, pod: PodIdentity, job: JobInfo, signature: str = "") -> None: ...

    async def annotate(self, pod: PodIdentity, annotations: Mapping[str, str]) -> None: ...

    async def read(self, pod: PodIdentity) -> dict[str, object] | None: ...

    async def list(self, namespace: str, selector: str) -> list[dict[str, object]]: ...


class Supervision(Protocol):
    def expect(self, binding: RunnerBinding) -> None: ...

    async def assign(self, pod_uid: str, request: pb.StartJobRequest, path: str = "") -> JobRecord: ...

    def job(self, pod_uid: str) -> JobRecord | None: ...

    def attached(self, pod_uid: str) -> bool: ...

    async def shutdown_job(self, pod_uid: str, reason: str, grace: float) -> JobOutcome | None: ...


class Events(Protocol):
    async def record(self, owner: Owner, reason: str, message: str, warning: bool = False) -> None: ...


class StatusWriting(Protocol):
    async def write(self, generation: int, conditions: list[Any], fields: dict[str, Any]) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Collaborators:
    pods: Pods
    supervisor: Supervision
    events: Events
    handover: Handover
    runner_settings: RunnerSettings
    default_heartbeat: HeartbeatSettings
    read_credentials: Callable[[str, SecretRef], Awaitable[Credentials]]
    status_writer: Callable[[Owner], StatusWriting]
    # the pod's terminationGracePeriodSeconds, when the pod watch has shown it
    grace_of: Callable[[PodIdentity], int | None] = lambda pod: None
