"""Support for tests of runner supervision against the real API server.

The listener and terminator here *observe*: the terminator records each call and then
really deletes the pod through the API (``PodTerminator``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from typing import Any

from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb
from agent_operator.kube.pods import PodTerminator
from agent_operator.kube.tokenreview import DEFAULT_AUDIENCE
from agent_operator.supervisor import (
    DeploymentRef,
    HeartbeatSettings,
    JobOutcome,
    JobRecord,
    PodIdentity,
    RunnerBinding,
)
from tests.support import environments


@dataclasses.dataclass
class Event:
    kind: str
    pod: PodIdentity
    detail: Any = None


class RecordingListener:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def _add(self, event: Event) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def runner_attached(self, binding: RunnerBinding, idle: bool) -> None:
        await self._add(Event("attached", binding.pod, idle))

    async def runner_detached(self, binding: RunnerBinding) -> None:
        await self._add(Event("detached", binding.pod))

    async def runner_prewarm_failed(self, binding: RunnerBinding, error: str) -> None:
        await self._add(Event("prewarm_failed", binding.pod, error))

    async def job_started(self, job: JobRecord) -> None:
        await self._add(Event("started", job.pod, job))

    async def job_joined(self, job: JobRecord) -> None:
        await self._add(Event("joined", job.pod, job))

    async def job_adopted(self, job: JobRecord) -> None:
        await self._add(Event("adopted", job.pod, job))

    async def job_ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        await self._add(Event("ended", job.pod, outcome))

    async def job_checkpoint(self, job: JobRecord, checkpoint: pb.Checkpoint) -> None:
        await self._add(Event("checkpoint", job.pod, checkpoint))

    async def wait_for(self, kind: str, pod: PodIdentity | None = None, timeout: float = 60) -> Event:
        def find() -> Event | None:
            return next((e for e in self.events if e.kind == kind and (pod is None or e.pod == pod)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(find), timeout)
        found = find()
        assert found is not None
        return found

    def of(self, kind: str, pod: PodIdentity | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (pod is None or e.pod == pod)]


class RecordedTerminations:
    """A terminator that only records which pods it was asked to stop."""

    def __init__(self) -> None:
        self.pods: list[PodIdentity] = []
        self.called = asyncio.Event()

    async def terminate(self, pod: PodIdentity, reason: str) -> None:
        self.pods.append(pod)
        self.called.set()


class ObservedTerminator:
    """Records every terminate call, then deletes the pod for real."""

    def __init__(self, api: client.ApiClient) -> None:
        self._real = PodTerminator(api)
        self.calls: list[tuple[PodIdentity, str, float]] = []
        self.called = asyncio.Event()

    async def terminate(self, pod: PodIdentity, reason: str) -> None:
        self.calls.append((pod, reason, asyncio.get_running_loop().time()))
        self.called.set()
        await self._real.terminate(pod, reason)


DEPLOYMENT = DeploymentRef("test", "agent")


def failures(reason: str) -> float:
    """agent_operator_runner_attach_failures_total{reason} in this process."""
    return REGISTRY.get_sample_value("agent_operator_runner_attach_failures_total", {"reason": reason}) or 0.0


def binding_for(pod: dict[str, Any] | Any, heartbeat: HeartbeatSettings | None = None) -> RunnerBinding:
    if isinstance(pod, dict):
        meta = pod["metadata"]
        identity = PodIdentity(meta["namespace"], meta["name"], meta["uid"])
    else:
        identity = PodIdentity(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid)
    return RunnerBinding(
        identity, DeploymentRef(identity.namespace, "agent"), heartbeat or HeartbeatSettings()
    )


async def parked_pod(core: client.CoreV1Api, namespace: str, name: str | None = None) -> Any:
    """A pod object bound to a node that does not run it: a real identity, no process."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"parked-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "nodeName": "nowhere",
            "automountServiceAccountToken": False,
            "containers": [{"name": "runner", "image": "agent:test", "command": ["true"]}],
        },
    }
    return await core.create_namespaced_pod(namespace, body)


def idle_hello(pod: Any, credential: str) -> pb.Hello:
    """The Hello of an idle runner in ``pod`` (a V1Pod, or anything with its metadata)."""
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        pod_namespace=pod.metadata.namespace,
        pod_name=pod.metadata.name,
        pod_uid=pod.metadata.uid,
        credential=credential,
        state=pb.RUNNER_STATE_IDLE,
    )


def forged_token(subject: str) -> str:
    """A JWT of the shape and audience of a runner token, signed by nobody: the costliest
    bogus credential (garbage is refused without a TokenReview)."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"aud": [DEFAULT_AUDIENCE], "exp": int(time.time()) + 600, "sub": subject}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.Zm9yZ2Vk"


async def pod_token(core: client.CoreV1Api, pod: Any, audience: str = DEFAULT_AUDIENCE) -> str:
    """A token bound to ``pod``, as the kubelet would mount it."""
    req = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [audience],
            "expirationSeconds": 600,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        },
    }
    resp = await core.create_namespaced_service_account_token("default", pod.metadata.namespace, req)
    token: str = resp.status.token
    return token


def runner_pod(
    name: str,
    operator_address: str,
    entrypoint: str,
    extra_env: dict[str, str] | None = None,
    audience: str = DEFAULT_AUDIENCE,
) -> dict[str, Any]:
    """A job pod whose container runs the real ``agent-jobrunner``: the test agent image, as
    imported into the node (its entrypoint is the runner)."""
    env = [
        {"name": "AGENT_OPERATOR_ADDRESS", "value": operator_address},
        {"name": "AGENT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AGENT_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "AGENT_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "AGENT_RUNNER_TOKEN_PATH", "value": "/var/run/secrets/agentoperator.dev/runner/token"},
        {"name": "AGENT_ENTRYPOINT", "value": entrypoint},
        {"name": "AGENT_LOG_LEVEL", "value": "DEBUG"},
    ]
    env += [{"name": k, "value": v} for k, v in (extra_env or {}).items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"agentoperator.dev/test": "runner"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 15,
            "containers": [
                {
                    "name": "runner",
                    "image": environments.agent_image(),
                    "imagePullPolicy": "IfNotPresent",
                    "env": env,
                    "volumeMounts": [
                        {"name": "runner-token", "mountPath": "/var/run/secrets/agentoperator.dev/runner"}
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "runner-token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": audience,
                                    "expirationSeconds": 3600,
                                    "path": "token",
                                }
                            }
                        ]
                    },
                }
            ],
        },
    }
