"""A restarted operator trusts only the pods it signed (issue 14, defect 9).

The attacker here holds what a compromised workload with ``pods/patch`` and ``pods/create``
in the namespace holds: the API. While the operator is down it rewrites an idle pool pod into
a job pod for a room of its choosing (a start request whose URL is its own listener), and
creates a copy of a signed pool pod that is not owned by the AgentDeployment. The next
operator must mint no token for either, contact no URL but the spec's, and say so.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api
from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb
from agent_operator import resume
from agent_operator.kube.podspec import (
    ANNOTATION_JOB_ID,
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_JOB_ID,
    LABEL_STATE,
)
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.listener import Listener
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    idle_pods,
)

pytestmark = pytest.mark.e2e


async def test_forged_and_foreign_pods_get_no_token(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    core = client.CoreV1Api(k8s)
    await create_credentials(core, deployments.namespace, livekit)
    await deployments.create(
        agent_deployment("trust", livekit, f"{AGENTS}:beacon_forever", warmPool={"size": 2})
    )
    await operator.wait_ready()

    async def two_idle() -> list[Any] | None:
        pods = await idle_pods(deployments, "trust")
        status = (await deployments.get("trust")).get("status") or {}
        return pods if len(pods) == 2 and status.get("idlePods") == 2 else None

    forged, model = await eventually(two_idle, 90, "two idle pool pods attached")
    operator.kill()

    victim_room = f"victim-{uuid.uuid4().hex[:6]}"
    await lk.room.create_room(api.CreateRoomRequest(name=victim_room))
    attacker = Listener()
    async with attacker.serving():
        # 1. an idle pod rewritten into a job pod for the victim's room, URL the attacker's
        job = agent.Job(id=f"AJ_{uuid.uuid4().hex[:12]}", room=models.Room(name=victim_room))
        request = pb.StartJobRequest(
            job=job.SerializeToString(),
            url=attacker.url,
            participant_identity="agent-forged",
        )
        await core.patch_namespaced_pod(
            forged.metadata.name,
            deployments.namespace,
            {
                "metadata": {
                    "labels": {LABEL_STATE: "busy", LABEL_JOB_ID: job.id},
                    "annotations": {
                        ANNOTATION_START: resume.encode(request),
                        ANNOTATION_ROOM: victim_room,
                        ANNOTATION_JOB_ID: job.id,
                    },
                }
            },
        )
        # 2. a copy of a signed pool pod (labels, annotations, signature), owned by nobody
        copy = core.api_client.sanitize_for_serialization(model)
        meta = copy["metadata"]
        meta["name"] = f"trust-copy-{uuid.uuid4().hex[:4]}"
        for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "ownerReferences"):
            meta.pop(key, None)
        copy.pop("status", None)
        copy["spec"].pop("nodeName", None)
        copied = await core.create_namespaced_pod(deployments.namespace, copy)

        operator.start()
        await operator.wait_ready()
        await deployments.wait_condition("trust", "Ready", "True", timeout=60)

        async def distrusted() -> list[str] | None:
            found = [e.message for e in await deployments.events("trust") if e.reason == "PodNotTrusted"]
            return found if len(found) >= 2 else None

        messages = await eventually(distrusted, 60, "a PodNotTrusted event for each pod")
        forged_event = next(m for m in messages if forged.metadata.name in m)
        assert "signature does not match" in forged_event
        assert "no token" in forged_event
        copy_event = next(m for m in messages if copied.metadata.name in m)
        assert "ownerReference (none)" in copy_event

        await asyncio.sleep(10)  # the forged pod's runner keeps trying to attach meanwhile
        participants = await lk.room.list_participants(api.ListParticipantsRequest(room=victim_room))
        assert not participants.participants, "no agent joined the victim's room"
        assert attacker.connections == 0, "nothing was sent to the forged URL"

        # the pool refills with pods of its own; the two are left alone
        async def refilled() -> bool:
            pods = await idle_pods(deployments, "trust")
            return len([p for p in pods if p.metadata.uid != copied.metadata.uid]) >= 2

        await eventually(refilled, 90, "the pool refilled with new pods")

    log = operator.log_text()
    assert "resumed the job" not in log
    assert "pod not trusted" in log
    assert not any(e.reason == "JobResumed" for e in await deployments.events("trust"))
    assert {p.metadata.uid for p in await deployments.pods("trust")} >= {forged.metadata.uid}, "not deleted"
    await core.delete_namespaced_pod(copied.metadata.name, deployments.namespace)
