"""livekit-agents agents under the real operator: one runner pod per job, the operator the only worker.

The example agent (``jobrunner/examples/weather-agent``) as an AgentDeployment with ``runtime:
livekit-agents`` and a warm pool (its pods prewarmed): a dispatched job answers a caller with its
tool. The fault paths hold for this runtime: a SIGKILLed or SIGSTOPped runner fails its job and
its pod goes; an image with an unsupported livekit-agents release fails its jobs with an Event
that says so.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.caller import Caller
from devenv.environment import REPO_ROOT
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from devenv.speech import speak, transcribe
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    job_pod,
    pid,
    starts_reported,
    status_equals,
    wait_participant,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

EXAMPLE = REPO_ROOT / "jobrunner" / "examples" / "weather-agent"


def lka_deployment(
    name: str, livekit: LiveKitAccess, entrypoint: str, python_path: str, **spec: Any
) -> dict[str, Any]:
    body = agent_deployment(name, livekit, entrypoint, runtime="livekit-agents", **spec)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "PYTHONPATH"]
    container["env"].append({"name": "PYTHONPATH", "value": python_path})
    return body


async def create_ready(
    deployments: Deployments,
    operator: OperatorProcess,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    body: dict[str, Any],
) -> dict[str, Any]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    created = await deployments.create(body)
    await operator.wait_ready()
    await deployments.wait_condition(body["metadata"]["name"], "Ready", "True", timeout=90)
    return created


async def test_the_example_agent_answers_from_a_warm_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = lka_deployment(
        "weather",
        livekit,
        "agent:server",
        os.pathsep.join([str(EXAMPLE), str(REPO_ROOT)]),
        warmPool={"size": 1},
    )
    body = await create_ready(deployments, operator, k8s, livekit, body)
    # attached and idle only once its prewarm (the Silero VAD) ran
    await status_equals(deployments, "weather", "idlePods", 1, timeout=120)
    idle = await job_pod(deployments, "weather")
    assert idle.metadata.labels["agentoperator.dev/state"] == "idle"
    room = f"room-{uuid.uuid4().hex[:6]}"
    caller = Caller()
    try:
        await dispatch(lk, body["spec"]["agentName"], room)
        await caller.join(livekit, room)
        await wait_participant(lk, room, "agent-")
        await caller.wait_agent_track(90)
        await starts_reported(deployments, "weather", 1)
        busy = [
            p for p in await deployments.pods("weather") if p.metadata.labels.get("agentoperator.dev/job-id")
        ]
        assert [p.metadata.name for p in busy] == [idle.metadata.name]  # the warm pod took the job

        _, said = await caller.say(await speak("What is the weather in Paris?"))
        start = await caller.agent_starts(said)
        end = await caller.agent_stops(said)
        answer = await transcribe(caller.audio(start - 0.3, end + 0.3))
        assert {"weather", "paris", "sunny", "warm"} <= set(answer.split()), answer
    finally:
        await caller.leave()
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    status = await status_equals(deployments, "weather", "jobsSucceeded", 1, timeout=90)
    assert status["jobsFailed"] == 0
    operator_log = operator.log_text()
    assert "get_weather called" in operator_log  # the agent's records reached the operator


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
async def test_a_killed_or_stopped_livekit_agents_runner_fails_the_job_and_its_pod_goes(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    signum: signal.Signals,
) -> None:
    name = signum.name.lower()
    heartbeat = {"pingInterval": "500ms", "pingTimeout": "4s"}
    body = lka_deployment(
        name, livekit, "tests.agents.lka_agents:server", str(REPO_ROOT), heartbeat=heartbeat
    )
    body = await create_ready(deployments, operator, k8s, livekit, body)
    room = f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    await starts_reported(deployments, name, 1)
    pod = await job_pod(deployments, name)
    os.kill(await pid(deployments, pod), signum)
    await status_equals(deployments, name, "jobsFailed", 1, timeout=90)

    async def gone() -> bool:
        return not await deployments.pods(name)

    await eventually(gone, 90, f"the {signum.name} runner's pod removed")
    if signum is signal.SIGSTOP:  # a hung runner: found by the heartbeat
        assert any(e.reason == "RunnerUnresponsive" for e in await deployments.events(name))
    assert operator.alive()


async def test_an_unsupported_livekit_agents_release_is_named_in_the_job_ended_event(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    tmp_path: Path,
) -> None:
    old = tmp_path / "old-site" / "livekit_agents-1.7.0.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: livekit-agents\nVersion: 1.7.0\n")
    # the repo first: the process kubelet reads a value that starts with /tmp (a mountPath) as
    # one path into the pod's own /tmp; either way the old metadata comes before site-packages
    python_path = os.pathsep.join([str(REPO_ROOT), str(old.parent)])
    body = lka_deployment("old", livekit, "tests.agents.lka_agents:server", python_path)
    body = await create_ready(deployments, operator, k8s, livekit, body)
    await dispatch(lk, body["spec"]["agentName"], f"room-{uuid.uuid4().hex[:6]}")
    await status_equals(deployments, "old", "jobsFailed", 1, timeout=90)

    async def ended() -> Any:
        events = [e for e in await deployments.events("old") if e.reason == "JobEnded"]
        return events[0] if events else None

    event = await eventually(ended, 60, "a JobEnded event")
    assert (
        "livekit-agents 1.7.0 is installed, but this runner supports livekit-agents>=1.8,<1.9"
        in event.message
    )
