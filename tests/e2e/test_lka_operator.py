"""livekit-agents agents under the real operator: one runner pod per job, the operator the only worker.

The example agent (``jobrunner/examples/weather-agent``) as an AgentDeployment with ``runtime:
livekit-agents`` and a warm pool (its pods prewarmed): a dispatched job answers a caller with its
tool. A ``WorkerOptions`` agent runs prewarmed in a warm pod too, and its ``ctx.shutdown()`` is a
success. The fault paths hold for this runtime: a SIGKILLed or SIGSTOPped runner fails its job and
its pod goes; an image with an unsupported livekit-agents release fails its jobs with an Event
that says so. An operator restarted mid-conversation leaves the call going; one killed before a
warm job joined its room (its pod still labelled idle) keeps the call, and the pod is not given
to another one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from livekit import api

from agent_operator.kube.podspec import ANNOTATION_ROOM
from devenv.caller import Caller
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.agents.lka_agents import PREWARMED
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    create_ready,
    dispatch,
    job_pod,
    lka_deployment,
    pid,
    starts_reported,
    status_equals,
    wait_participant,
)
from tests.support.weather_call import ANSWER_WORDS, ask, ask_the_weather

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

# in the test agent image (tests/agents/Dockerfile): the example agent, and the metadata of a
# livekit-agents release this runner does not support
EXAMPLE_PATH = "/app/examples/weather-agent:/app"
OLD_RELEASE_PATH = "/app:/app/tests/agents/old-livekit-agents"


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
        EXAMPLE_PATH,
        warmPool={"size": 1},
    )
    body = await create_ready(deployments, operator, k8s, livekit, body)
    # attached and idle only once its prewarm (the Silero VAD) ran
    await status_equals(deployments, "weather", "idlePods", 1, timeout=120)
    idle = await job_pod(deployments, "weather")
    assert idle.metadata.labels["agentoperator.dev/state"] == "idle"
    busy, answer = await ask_the_weather(lk, livekit, deployments, "weather", body["spec"]["agentName"])
    assert busy == [idle.metadata.name]  # the warm pod took the job
    assert set(answer.split()) >= ANSWER_WORDS, answer
    status = await status_equals(deployments, "weather", "jobsSucceeded", 1, timeout=90)
    assert status["jobsFailed"] == 0
    operator_log = operator.log_text()
    assert "get_weather called" in operator_log  # the agent's records reached the operator


async def test_an_operator_restarted_mid_call_leaves_the_conversation_going(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """The example agent in a conversation: after its first answer the operator is SIGKILLed and
    a new one started. The pod's runner re-attaches with its job (JobAdopted), the same agent
    stays in the room, and the caller's next question is answered in the same call."""
    body = lka_deployment("midcall", livekit, "agent:server", EXAMPLE_PATH, warmPool={"size": 1})
    body = await create_ready(deployments, operator, k8s, livekit, body)
    await status_equals(deployments, "midcall", "idlePods", 1, timeout=120)
    pod = await job_pod(deployments, "midcall")  # the warm pod the call takes
    room = f"room-{uuid.uuid4().hex[:6]}"
    caller = Caller()
    try:
        await dispatch(lk, body["spec"]["agentName"], room)
        await caller.join(livekit, room)
        agent = await wait_participant(lk, room, "agent-")
        await caller.wait_agent_track(90)
        await starts_reported(deployments, "midcall", 1)
        before = await ask(caller)
        assert set(before.split()) >= ANSWER_WORDS, before

        operator.kill()
        operator.start()

        async def adopted() -> bool:
            return any(e.reason == "JobAdopted" for e in await deployments.events("midcall"))

        await eventually(adopted, 90, "the call's job adopted from its runner by the new operator")
        after = await ask(caller)
        assert set(after.split()) >= ANSWER_WORDS, after
        still = await wait_participant(lk, room, "agent-")
        assert still.sid == agent.sid, "the same agent session, not a new one"
        kept = {p.metadata.uid: p for p in await deployments.pods("midcall")}
        assert pod.metadata.uid in kept, "the call's pod was kept"
        assert kept[pod.metadata.uid].metadata.annotations.get(ANNOTATION_ROOM) == room
        assert (await deployments.get("midcall"))["status"].get("jobsFailed", 0) == 0
    finally:
        await caller.leave()
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    status = await status_equals(deployments, "midcall", "jobsSucceeded", 1, timeout=90)
    assert status.get("jobsFailed", 0) == 0


def forwarded(operator: OperatorProcess, room: str) -> list[dict[str, Any]]:
    """The agent's log records the operator re-emitted for ``room``'s job, parsed."""
    lines = [line for line in operator.log_text().splitlines() if f'"room": "{room}"' in line]
    return [r for r in map(json.loads, lines) if r["logger"] == "agent_operator.runner"]


async def test_a_worker_options_agent_runs_prewarmed_in_a_warm_pod_and_its_shutdown_succeeds(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """The older style, ``WorkerOptions(entrypoint_fnc=..., prewarm_fnc=...)``, as it is: the pool
    pod runs its ``prewarm_fnc`` before it counts idle, the job in that pod gets the userdata, and
    the agent's ``ctx.shutdown()`` ends the job succeeded, its shutdown callback run."""
    body = lka_deployment("options", livekit, "tests.agents.lka_agents:options", "/app", warmPool={"size": 1})
    body["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LKA_TEST_MODE", "value": "shutdown"}
    )
    body = await create_ready(deployments, operator, k8s, livekit, body)
    await status_equals(deployments, "options", "idlePods", 1, timeout=120)
    idle = await job_pod(deployments, "options")
    room = f"room-{uuid.uuid4().hex[:6]}"
    caller = Caller()
    try:
        await dispatch(lk, body["spec"]["agentName"], room)
        await caller.join(livekit, room)  # the participant its wait_for_participant() waits for
        status = await status_equals(deployments, "options", "jobsSucceeded", 1, timeout=90)
    finally:
        await caller.leave()
    assert status.get("jobsFailed", 0) == 0

    async def shut_down() -> list[dict[str, Any]] | None:
        records = forwarded(operator, room)
        return records if any(r["msg"] == "shutdown callback ran" for r in records) else None

    records = await eventually(shut_down, 30, "the agent's shutdown callback's record")
    connected = next(r for r in records if r["msg"] == "lka entrypoint connected")
    assert connected["userdata"] == PREWARMED  # what the pool pod's prewarm_fnc put there
    assert connected["pod"] == f"{deployments.namespace}/{idle.metadata.name}"  # the warm pod took it
    assert connected["room_name"] == room
    ended = next(r for r in records if r["msg"] == "shutdown callback ran")
    assert ended["shutdown_reason"] == "the agent is done"


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
    body = lka_deployment(name, livekit, "tests.agents.lka_agents:server", "/app", heartbeat=heartbeat)
    body = await create_ready(deployments, operator, k8s, livekit, body)
    room = f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-")
    await starts_reported(deployments, name, 1)
    pod = await job_pod(deployments, name)
    os.kill(await pid(deployments, pod), signum)  # the container's process, by its PID from containerd
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
) -> None:
    # the old release's metadata before site-packages (the image's venv)
    body = lka_deployment("old", livekit, "tests.agents.lka_agents:server", OLD_RELEASE_PATH)
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


async def test_an_operator_killed_before_a_warm_job_joined_keeps_the_call_and_the_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """A pool pod's busy label waits for its job's join (``placement``). The operator is
    SIGKILLed after the pod's runner got the job and before its ``ctx.connect()`` (held by a
    gate file), so the next operator finds the pod labelled idle. Its runner is SIGSTOPped
    meanwhile, so it has not re-attached when a second call comes: that call must get a pod of
    its own, not this one. Then the runner comes back with its job, and both calls are answered."""
    gate = "/tmp/lka-connect-gate"  # in the containers
    body = lka_deployment(
        "window", livekit, "tests.agents.lka_agents:server", "/app", warmPool={"size": 1}, maxConcurrentJobs=4
    )
    body["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LKA_TEST_CONNECT_GATE", "value": gate}
    )
    body = await create_ready(deployments, operator, k8s, livekit, body)
    agent_name = body["spec"]["agentName"]
    await status_equals(deployments, "window", "idlePods", 1, timeout=120)
    pool_pod = await job_pod(deployments, "window")
    runner = await pid(deployments, pool_pod)
    first, second = (f"room-{uuid.uuid4().hex[:6]}" for _ in range(2))

    await dispatch(lk, agent_name, first)

    async def runner_has_the_job() -> bool:
        return "lka entrypoint waiting to connect" in operator.log_text()

    await eventually(runner_has_the_job, 90, "the pool pod's entrypoint at its gate", interval=0.02)
    operator.kill()
    os.kill(runner, signal.SIGSTOP)
    try:
        found = await deployments.core.read_namespaced_pod(pool_pod.metadata.name, deployments.namespace)
        assert found.metadata.labels["agentoperator.dev/state"] == "idle", "the window this test is about"
        before_id = (await deployments.get("window"))["status"]["workerId"]
        operator.start()

        async def registered_again() -> bool:  # Ready is still True from the killed operator
            status = (await deployments.get("window")).get("status") or {}
            return status.get("workerId") not in (None, "", before_id)

        await eventually(registered_again, 90, "the new operator's worker registered")
        await dispatch(lk, agent_name, second)

        async def second_pod() -> Any:
            for pod in await deployments.pods("window"):
                if (pod.metadata.annotations or {}).get(ANNOTATION_ROOM) == second:
                    return pod
            return None

        other = await eventually(second_pod, 60, "a pod for the second call")
        assert other.metadata.uid != pool_pod.metadata.uid
    finally:
        os.kill(runner, signal.SIGCONT)

    async def adopted() -> bool:
        return any(e.reason == "JobAdopted" for e in await deployments.events("window"))

    await eventually(adopted, 60, "the first call's job re-adopted from its runner")
    for pod in (pool_pod, other):
        opened = Path(f"/proc/{await pid(deployments, pod)}/root{gate}")
        await asyncio.to_thread(opened.touch)  # its ctx.connect() goes on
    for room in (first, second):
        await wait_participant(lk, room, "agent-", timeout=60)
    pods = {p.metadata.uid: p for p in await deployments.pods("window")}
    assert pool_pod.metadata.uid in pods, "the first call's pod was kept"
    status = (await deployments.get("window"))["status"]
    assert status.get("jobsFailed", 0) == 0
    assert status["activeJobs"] == 2
