"""A supervisor in the test process and real runner pods (containers of the test agent image)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api, rtc
from livekit.protocol import agent as lk_agent
from livekit.protocol import models

from agent_jobrunner.protocol import pb
from agent_operator.kube.tokenreview import TokenReviewAuthenticator
from agent_operator.supervisor import (
    HeartbeatSettings,
    PodIdentity,
    RunnerBinding,
    Supervisor,
    SupervisorSettings,
)
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support import environments
from tests.support.supervision import ObservedTerminator, RecordingListener, binding_for, runner_pod

AGENTS = "tests.agents.stream_agents"


class Harness:
    """A supervisor on a fixed port, plus helpers to run runner pods against it."""

    def __init__(self, k8s: client.ApiClient, namespace: str, livekit: LiveKitAccess) -> None:
        self.k8s = k8s
        self.core = client.CoreV1Api(k8s)
        self.namespace = namespace
        self.livekit = livekit
        self.listener = RecordingListener()
        self.terminator = ObservedTerminator(k8s)
        self.supervisor: Supervisor | None = None
        self.port = 0
        self.bindings: dict[str, RunnerBinding] = {}
        self.callers: list[rtc.Room] = []
        self.start_latencies: list[float] = []

    async def start_supervisor(self, reattach_grace: float = 3.0) -> Supervisor:
        async def resolver(pod: PodIdentity) -> RunnerBinding | None:
            return self.bindings.get(pod.uid)

        sup = Supervisor(
            TokenReviewAuthenticator(self.k8s),
            self.terminator,
            self.listener,
            SupervisorSettings(reattach_grace=reattach_grace),
            resolver=resolver,
        )
        # on the node IP: the runner pods are containers that dial it there
        self.port = await sup.start(f"{environments.node_ip()}:{self.port}")
        self.supervisor = sup
        return sup

    async def stop_supervisor(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop(grace=0)
            self.supervisor = None

    async def runner(self, entrypoint: str, heartbeat: HeartbeatSettings | None = None, **env: str) -> Any:
        """Create a runner pod, tell the supervisor to expect it, wait until it attaches."""
        assert self.supervisor is not None
        name = f"runner-{uuid.uuid4().hex[:6]}"
        body = runner_pod(
            name,
            f"{environments.node_ip()}:{self.port}",
            f"{AGENTS}:{entrypoint}",
            {"AGENT_REATTACH_WINDOW_SECONDS": "60", **env},
        )
        pod = await self.core.create_namespaced_pod(self.namespace, body)
        binding = binding_for(pod, heartbeat)
        self.bindings[pod.metadata.uid] = binding
        self.supervisor.expect(binding)
        sup = self.supervisor
        await eventually(lambda: _true(sup.attached(pod.metadata.uid)), 90, f"runner {name} attached")
        return pod

    def job_request(self, room: str, identity: str) -> tuple[lk_agent.Job, pb.StartJobRequest]:
        job = lk_agent.Job(
            id=f"AJ_{uuid.uuid4().hex[:10]}",
            type=lk_agent.JT_ROOM,
            room=models.Room(name=room),
            agent_name="stream-test",
        )
        token = (
            api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
            .with_identity(identity)
            .with_name("test agent")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
            .to_jwt()
        )
        request = pb.StartJobRequest(
            job=job.SerializeToString(),
            url=self.livekit.url,
            token=token,
            participant_identity=identity,
            participant_name="test agent",
            auto_subscribe=pb.AUTO_SUBSCRIBE_ALL,
        )
        return job, request

    async def start_job(self, pod: Any, room: str) -> lk_agent.Job:
        assert self.supervisor is not None
        job, request = self.job_request(room, f"agent-{uuid.uuid4().hex[:6]}")
        await self.supervisor.assign(pod.metadata.uid, request)
        t0 = time.monotonic()
        await asyncio.wait_for(self.supervisor.wait_started(pod.metadata.uid), 90)
        self.start_latencies.append(time.monotonic() - t0)
        return job

    async def caller(self, room: str) -> tuple[rtc.Room, asyncio.Queue[bytes]]:
        """A second participant in the room, collecting data packets."""
        token = (
            api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
            .with_identity(f"caller-{uuid.uuid4().hex[:4]}")
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        received: asyncio.Queue[bytes] = asyncio.Queue()
        lk_room = rtc.Room()
        lk_room.on("data_received", lambda packet: received.put_nowait(packet.data))
        await lk_room.connect(self.livekit.url, token)
        self.callers.append(lk_room)
        return lk_room, received

    async def pod_phase(self, pod: Any) -> str | None:
        try:
            got = await self.core.read_namespaced_pod(pod.metadata.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        phase: str = got.status.phase
        return phase

    async def pid(self, pod: Any) -> int:
        async def read() -> int | None:
            got = await self.core.read_namespaced_pod(pod.metadata.name, self.namespace)
            return await asyncio.to_thread(environments.runner_host_pid, got)  # asks containerd

        return await eventually(read, 30, "runner pid")

    async def close(self) -> None:
        for room in self.callers:
            with contextlib.suppress(Exception):
                await room.disconnect()
        await self.stop_supervisor()


async def _true(value: bool) -> bool:
    return value
