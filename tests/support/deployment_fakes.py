"""Small fakes of a deployment's collaborators (pods, supervisor, events, status, LiveKit's
job reports), for unit tests of the deployment runtime without servers. They record what
they were asked and can hold a call open (``gate``) to test what happens meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any, cast

from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb
from agent_operator.collaborators import Collaborators
from agent_operator.deployment import DeploymentRuntime
from agent_operator.handover import Handover
from agent_operator.kube import pod_trust
from agent_operator.kube.podspec import ANNOTATION_JOB_ID, LABEL_JOB_ID, JobInfo, Owner, RunnerSettings
from agent_operator.kube.secrets import Credentials
from agent_operator.spec import DeploymentSpec, SecretRef
from agent_operator.supervisor import JobOutcome, JobRecord, RunnerBinding
from agent_operator.vocabulary import HeartbeatSettings, PodIdentity

NAMESPACE = "ns"


def spec(**over: Any) -> DeploymentSpec:
    body: dict[str, Any] = {
        "livekit": {"url": "ws://livekit.test", "credentialsSecretRef": {"name": "lk"}},
        "agentName": "bot",
        "entrypoint": "agents.voice:entry",
        "maxConcurrentJobs": 5,
        "template": {"spec": {"containers": [{"name": "agent", "image": "runner:dev"}]}},
        **over,
    }
    return DeploymentSpec.parse(body)


class Gate:
    """Holds callers until opened (open by default)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = 0

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def passed(self) -> None:
        self.waiting += 1
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1


class FakePods:
    """Counts pods as the API server's pod list shows them: a pod may be live from the moment
    its create is sent, and stays live (no deletionTimestamp) until its delete returns."""

    def __init__(self) -> None:
        self.live: dict[str, PodIdentity] = {}  # created and not deleted
        self.created: list[PodIdentity] = []
        self.bodies: dict[str, dict[str, object]] = {}  # by uid: the bodies created
        self.deleted: list[tuple[PodIdentity, int | None]] = []
        self.busy: list[tuple[PodIdentity, str]] = []
        self.busy_info: list[tuple[PodIdentity, JobInfo]] = []
        self.annotated: list[tuple[PodIdentity, dict[str, str]]] = []
        self.annotate_gate = Gate()
        self.annotate_error: Exception | None = None  # raised by annotate while set
        self.listed: list[dict[str, object]] = []
        self.create_gate, self.delete_gate = Gate(), Gate()
        self.creating = 0
        self.peak = 0

    async def create(
        self, pod: dict[str, object], retry_for: float = 0.0, log_fields: Mapping[str, str] | None = None
    ) -> PodIdentity:
        meta = cast(dict[str, Any], pod["metadata"])
        self.creating += 1
        self.peak = max(self.peak, len(self.live) + self.creating)
        try:
            await self.create_gate.passed()
        finally:
            self.creating -= 1
        identity = PodIdentity(meta["namespace"], meta["name"], uuid.uuid4().hex)
        self.created.append(identity)
        self.bodies[identity.uid] = pod
        self.live[identity.uid] = identity
        return identity

    async def delete(self, pod: PodIdentity, grace_seconds: int | None = None) -> None:
        self.deleted.append((pod, grace_seconds))
        await self.delete_gate.passed()
        self.live.pop(pod.uid, None)  # the API server marked it for deletion: not live

    async def mark_busy(self, pod: PodIdentity, job: JobInfo, signature: str = "") -> None:
        self.busy.append((pod, job.job_id))
        self.busy_info.append((pod, job))

    async def annotate(self, pod: PodIdentity, annotations: Mapping[str, str]) -> None:
        await self.annotate_gate.passed()
        if self.annotate_error is not None:
            raise self.annotate_error
        self.annotated.append((pod, dict(annotations)))

    async def read(self, pod: PodIdentity) -> dict[str, object] | None:
        found = next((p for p in self.listed if cast(dict[str, Any], p["metadata"])["uid"] == pod.uid), None)
        return found

    async def list(self, namespace: str, selector: str) -> list[dict[str, object]]:
        return list(self.listed)


class FakeSupervisor:
    def __init__(self) -> None:
        self.bindings: dict[str, RunnerBinding] = {}
        self.assigned: list[tuple[str, pb.StartJobRequest, str]] = []
        self.records: dict[str, JobRecord] = {}
        self.attached_uids: set[str] = set()
        self.shutdowns: list[tuple[str, str]] = []
        self.forgotten: list[str] = []
        self.exited: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []

    async def forget(self, pod_uid: str) -> None:
        self.forgotten.append(pod_uid)

    async def unit_exited(self, pod_uid: str, detail: str, succeeded: bool = False) -> None:
        self.exited.append((pod_uid, detail))

    async def pod_failed(self, pod_uid: str, reason: str, message: str) -> None:
        self.failed.append((pod_uid, reason))

    def expect(self, binding: RunnerBinding) -> None:
        self.bindings[binding.pod.uid] = binding

    async def assign(self, pod_uid: str, request: pb.StartJobRequest, path: str = "") -> JobRecord:
        job = agent.Job.FromString(request.job)
        record = JobRecord(job.id, job.room.name, self.bindings[pod_uid], assigned_at=0.0, path=path)
        self.records[pod_uid] = record
        self.assigned.append((pod_uid, request, path))
        return record

    def job(self, pod_uid: str) -> JobRecord | None:
        return self.records.get(pod_uid)

    def attached(self, pod_uid: str) -> bool:
        return pod_uid in self.attached_uids

    async def shutdown_job(self, pod_uid: str, reason: str, grace: float) -> JobOutcome | None:
        self.shutdowns.append((pod_uid, reason))
        return None


class FakeEvents:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    async def record(self, owner: Owner, reason: str, message: str, warning: bool = False) -> None:
        self.recorded.append((reason, message))


class FakeStatus:
    async def write(self, generation: int, conditions: list[Any], fields: dict[str, Any]) -> bool:
        return True


class Reports:
    """Stands in for the worker connection's job reports to LiveKit."""

    worker_id = "W_test"

    def __init__(self) -> None:
        self.updates: list[tuple[str, int, str]] = []
        self.answers: list[agent.AvailabilityResponse] = []
        self.gate = Gate()

    async def update_job(self, job_id: str, status: int, error: str = "") -> bool:
        self.updates.append((job_id, status, error))
        await self.gate.passed()
        return True

    async def answer(self, response: agent.AvailabilityResponse) -> None:
        self.answers.append(response)


@dataclasses.dataclass
class Harness:
    dep: DeploymentRuntime
    pods: FakePods
    supervisor: FakeSupervisor
    events: FakeEvents
    reports: Reports


async def _credentials(namespace: str, ref: SecretRef) -> Credentials:
    return Credentials("key", "secret")


def harness(deployment_spec: DeploymentSpec | None = None, registered: bool = True) -> Harness:
    pods, supervisor, events, reports = FakePods(), FakeSupervisor(), FakeEvents(), Reports()
    services = Collaborators(
        pods=pods,
        supervisor=supervisor,
        events=events,
        handover=Handover(),
        runner_settings=RunnerSettings("127.0.0.1:50051", "agent-operator", ""),
        default_heartbeat=HeartbeatSettings(),
        read_credentials=_credentials,
        status_writer=lambda owner: FakeStatus(),
    )
    owner = Owner(NAMESPACE, "voice", "uid-voice")
    dep = DeploymentRuntime(services, owner, deployment_spec or spec(), 1)
    if registered:  # as Registration.run leaves it: credentials read, the worker connected
        dep.registration.credentials = Credentials("key", "secret")
        dep.registration.worker = cast(Any, reports)
    return Harness(dep, pods, supervisor, events, reports)


def ours(body: dict[str, Any]) -> dict[str, Any]:
    """A found pod body as the harness deployment made it: owned by it and signed with the
    key of its credentials (kube.pod_trust), its job annotation beside its job label."""
    meta = body["metadata"]
    meta["ownerReferences"] = [
        {
            "apiVersion": "agentoperator.dev/v1alpha1",
            "kind": "AgentDeployment",
            "name": "voice",
            "uid": "uid-voice",
            "controller": True,
        }
    ]
    job_id = (meta.get("labels") or {}).get(LABEL_JOB_ID)
    if job_id:
        meta.setdefault("annotations", {})[ANNOTATION_JOB_ID] = job_id
    pod_trust.sign_pod(pod_trust.signing_key("secret"), body)
    return body


def offer(job_id: str, room: str = "room-1") -> agent.AvailabilityRequest:
    return agent.AvailabilityRequest(job=job(job_id, room))


def job(job_id: str, room: str = "room-1") -> agent.Job:
    return agent.Job(id=job_id, room=models.Room(name=room), agent_name="bot", dispatch_id=f"d-{job_id}")


def assignment(job_id: str, room: str = "room-1") -> agent.JobAssignment:
    return agent.JobAssignment(job=job(job_id, room), url="ws://livekit.test", token="jwt-" + job_id)


async def settle(condition: Any = None, timeout: float = 5.0) -> None:
    """Let background tasks run: until ``condition()`` holds, or a few loop turns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(20):
        await asyncio.sleep(0)
    while condition is not None and not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
