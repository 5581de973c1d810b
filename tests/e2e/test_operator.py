"""The operator end to end: a real ``agent-operator run`` process, the real API server
(PodSecurity ``restricted`` enforced on the namespace), the real node running real
runners in containers of the test agent image, and the real livekit-server dispatching jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api
from livekit.protocol import agent

from agent_operator import resume
from agent_operator.kube import pod_trust
from agent_operator.kube.podspec import (
    ANNOTATION_DISPATCH_ID,
    ANNOTATION_JOB_ID,
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_JOB_ID,
)
from agent_operator.worker.connection import STATUS_INTERVAL
from devenv.environment import TestEnvironment
from devenv.kubeclient import eventually, process_gone
from devenv.livekit import LiveKitAccess
from tests.support.listener import Listener
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    answered_call,
    create_credentials,
    dispatch,
    job_pod,
    metric_value,
    pid,
    ready_deployment,
    starts_reported,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e


async def test_dispatch_runs_one_pod_per_job_and_cleans_up(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await ready_deployment(deployments, operator, k8s, livekit, "voice", "beacon_forever")
    agent_name = body["spec"]["agentName"]
    room = f"room-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    await dispatch(lk, agent_name, room)
    participant = await wait_participant(lk, room, "agent-")
    joined = time.monotonic() - t0
    print(f"create_dispatch -> agent joined (cold path): {joined:.2f}s")
    pods = await deployments.pods("voice")
    assert len(pods) == 1
    pod = pods[0]
    job_id = pod.metadata.labels["agentoperator.dev/job-id"]
    assert participant.identity == f"agent-{job_id}"
    assert pod.metadata.annotations["agentoperator.dev/room"] == room
    assert pod.metadata.owner_references[0].kind == "AgentDeployment"

    await starts_reported(deployments, "voice", 1)
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    async def gone() -> bool:
        return not await deployments.pods("voice")

    await eventually(gone, 60, "job pod removed")

    async def counted() -> dict[str, Any] | None:
        status = (await deployments.get("voice")).get("status") or {}
        return status if status.get("jobsSucceeded") == 1 else None

    status = await eventually(counted, 30, "one success in status")
    assert status["jobsFailed"] == 0
    assert status["activeJobs"] == 0
    reasons = {e.reason for e in await deployments.events("voice")}
    assert {"WorkerRegistered", "JobAssigned", "JobStarted", "JobEnded"} <= reasons


async def test_deployments_get_only_their_own_agent_names(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    a = await deployments.create(agent_deployment("alpha", livekit, f"{AGENTS}:beacon_forever"))
    b = await deployments.create(agent_deployment("beta", livekit, f"{AGENTS}:beacon_forever"))
    await operator.wait_ready()
    for name in ("alpha", "beta"):
        await deployments.wait_condition(name, "Ready", "True")
    room_a, room_b = f"ra-{uuid.uuid4().hex[:6]}", f"rb-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, a["spec"]["agentName"], room_a)
    await dispatch(lk, b["spec"]["agentName"], room_b)
    await wait_participant(lk, room_a, "agent-")
    await wait_participant(lk, room_b, "agent-")
    pod_a, pod_b = await job_pod(deployments, "alpha"), await job_pod(deployments, "beta")
    assert pod_a.metadata.annotations["agentoperator.dev/room"] == room_a
    assert pod_b.metadata.annotations["agentoperator.dev/room"] == room_b


async def test_capacity_limits_what_the_worker_accepts(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """Every one of maxConcurrentJobs gets an agent, and no more. livekit-server offers jobs
    only to workers whose reported load is below its target load (0.7): were the load the
    plain fraction in use, the fourth call of four would get no agent."""
    body = await ready_deployment(
        deployments, operator, k8s, livekit, "four", "beacon_forever", maxConcurrentJobs=4
    )
    agent_name = body["spec"]["agentName"]
    rooms = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    for room in rooms[:4]:
        await asyncio.sleep(STATUS_INTERVAL + 0.5)  # LiveKit has the load with every job so far
        await dispatch(lk, agent_name, room)
        await wait_participant(lk, room, "agent-")
    await asyncio.sleep(STATUS_INTERVAL + 0.5)
    await dispatch(lk, agent_name, rooms[4])
    await asyncio.sleep(8)  # the server has no worker below its target load
    participants = await lk.room.list_participants(api.ListParticipantsRequest(room=rooms[4]))
    assert not [p for p in participants.participants if p.identity.startswith("agent-")]
    assert len(await deployments.pods("four")) == 4
    assert (await deployments.get("four"))["status"]["activeJobs"] == 4
    for room in rooms:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_a_slot_freed_at_full_capacity_is_offered_at_once(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """At maxConcurrentJobs LiveKit knows the worker full and offers it nothing. When a call
    ends, the next one, dispatched half a second later, gets an agent: the worker tells
    LiveKit of the freed slot at once, not at its next periodic status (every 2.5 s, which
    the half second would beat 4 times in 5). Three rounds."""
    body = await ready_deployment(
        deployments, operator, k8s, livekit, "one", "beacon_forever", maxConcurrentJobs=1
    )
    agent_name = body["spec"]["agentName"]

    async def ended() -> float:  # the series exists from the start, at 0
        text = await operator.metrics()
        return metric_value(text, "agent_operator_jobs_ended_total", deployment="one", outcome="success")

    async def more_ended_than(count: float) -> bool:
        return await ended() > count

    room = f"slot-0-{uuid.uuid4().hex[:6]}"
    rooms = [room]
    await dispatch(lk, agent_name, room)
    await wait_participant(lk, room, "agent-")
    for round_ in range(1, 4):
        await asyncio.sleep(STATUS_INTERVAL + 0.5)  # LiveKit has had the full status
        before = await ended()
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await eventually(
            functools.partial(more_ended_than, before), 30, "the call's end counted", interval=0.05
        )
        await asyncio.sleep(0.5)
        room = f"slot-{round_}-{uuid.uuid4().hex[:6]}"
        rooms.append(room)
        await dispatch(lk, agent_name, room)
        await wait_participant(lk, room, "agent-", timeout=30)
    for room in rooms:
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_stopped_runner_pod_is_deleted_and_reported(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    heartbeat = {"pingInterval": "500ms", "pingTimeout": "4s"}
    body = await ready_deployment(
        deployments, operator, k8s, livekit, "hung", "beacon_forever", heartbeat=heartbeat
    )
    await answered_call(lk, body["spec"]["agentName"])
    pod = await job_pod(deployments, "hung")
    runner_pid = await pid(deployments, pod)
    t0 = time.monotonic()
    os.kill(runner_pid, signal.SIGSTOP)

    async def gone() -> bool:
        return not await deployments.pods("hung")

    await eventually(gone, 60, "unresponsive runner's pod deleted")
    elapsed = time.monotonic() - t0
    print(f"SIGSTOP -> pod deleted: {elapsed:.2f}s (ping timeout 4s, interval 0.5s)")
    assert elapsed <= 4 + 0.5 + 10, elapsed
    await status_equals(deployments, "hung", "jobsFailed", 1)
    events = await deployments.events("hung")
    unresponsive = [e for e in events if e.reason == "RunnerUnresponsive"]
    assert unresponsive
    assert unresponsive[0].type == "Warning"
    assert "no pong" in unresponsive[0].message
    # no grace for a hung runner (its pod's grace period is 15 s)
    await eventually(process_gone(runner_pid), 8, "the stopped runner's process killed")


async def test_crashing_entrypoint_fails_the_job_and_operator_stays_healthy(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await ready_deployment(deployments, operator, k8s, livekit, "crashy", "fail_after_join")
    await dispatch(lk, body["spec"]["agentName"], f"room-{uuid.uuid4().hex[:6]}")
    await status_equals(deployments, "crashy", "jobsFailed", 1)

    async def gone() -> bool:
        return not await deployments.pods("crashy")

    await eventually(gone, 60, "crashed runner's pod removed")
    events = [e for e in await deployments.events("crashy") if e.reason == "JobEnded"]
    assert any("broke on purpose" in e.message for e in events)
    assert operator.alive()
    await deployments.wait_condition("crashy", "Ready", "True")


async def test_operator_killed_mid_job_readopts_the_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await ready_deployment(deployments, operator, k8s, livekit, "steady", "beacon_forever")
    room, agent = await answered_call(lk, body["spec"]["agentName"])
    pod = await job_pod(deployments, "steady")

    operator.kill()
    await asyncio.sleep(3)
    # the call goes on without the operator
    still = await wait_participant(lk, room, "agent-", timeout=10)
    assert still.sid == agent.sid

    operator.start()
    await operator.wait_ready()
    await deployments.wait_condition("steady", "Ready", "True")

    async def adopted() -> bool:
        return any(e.reason == "JobAdopted" for e in await deployments.events("steady"))

    await eventually(adopted, 60, "JobAdopted event")
    await asyncio.sleep(3)
    pods = await deployments.pods("steady")
    assert [p.metadata.uid for p in pods] == [pod.metadata.uid], "no second pod for the same job"
    again = await wait_participant(lk, room, "agent-", timeout=10)
    assert again.sid == agent.sid, "the agent never left the call"
    assert (await deployments.get("steady"))["status"]["activeJobs"] == 1


async def slow_job(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    name: str,
) -> tuple[dict[str, Any], str, Any]:
    """A deployment whose runners attach 8 s after their pod starts, and one job of it on the
    cold path: (the AgentDeployment, the job's room, its pod)."""
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = await deployments.create(
        agent_deployment(name, livekit, "tests.agents.slow_import:beacon_forever")
    )
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True", timeout=60)
    room = f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    return body, room, await job_pod(deployments, name)


async def test_operator_killed_before_the_runner_attached_resumes_the_job(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """A cold-path job whose runner had not attached when the operator died: the next operator
    sends it the job, rebuilt from the pod (the token minted anew), and the call gets its agent."""
    # the runner imports for 8 s before it attaches: the operator is killed meanwhile
    body, room, pod = await slow_job(operator, deployments, k8s, livekit, lk, "late")
    operator.kill()
    assert "runner attached" not in operator.log_text(), "too late: the runner attached first"

    # what the pod keeps: the start request, and no token
    annotations = pod.metadata.annotations
    kept = resume.decode(annotations[ANNOTATION_START])
    assert kept is not None
    assert kept.token == "", "no room token on the pod"
    assert agent.Job.FromString(kept.job).id == pod.metadata.labels[LABEL_JOB_ID]
    assert agent.Job.FromString(kept.job).room.name == room
    assert not [v for v in annotations.values() if "eyJ" in v], "nothing JWT-like in the annotations"

    operator.start()
    joined = await wait_participant(lk, room, "agent-", timeout=90)
    assert joined.kind == 4, "joined as an agent participant"  # ParticipantInfo.Kind.AGENT
    assert joined.attributes.get("lk.agent.name") == body["spec"]["agentName"]

    async def resumed() -> bool:
        return any(e.reason == "JobResumed" for e in await deployments.events("late"))

    await eventually(resumed, 30, "JobResumed event")
    await starts_reported(deployments, "late", 1)  # the start is counted when the runner reports it
    page = await operator.metrics()
    started = metric_value(page, "agent_operator_jobs_started_total", deployment="late", path="resumed")
    assert started == 1, "counted as a resumed start"
    assert [p.metadata.uid for p in await deployments.pods("late")] == [pod.metadata.uid], "no second pod"
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "late", "jobsSucceeded", 1, timeout=90)
    assert (await deployments.get("late"))["status"].get("jobsFailed", 0) == 0


async def test_a_job_whose_call_ended_meanwhile_is_not_resumed(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """The caller hung up while the operator was down: the room is gone, and an agent joining
    would create it anew and sit in it alone. The job ends instead, and its pod goes."""
    _, room, pod = await slow_job(operator, deployments, k8s, livekit, lk, "ended")
    operator.kill()
    assert "runner attached" not in operator.log_text(), "too late: the runner attached first"
    job_id = pod.metadata.labels[LABEL_JOB_ID]
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    operator.start()

    async def failed() -> Any:
        events = await deployments.events("ended")
        return next(
            (e for e in events if e.reason == "JobFailed" and f"{job_id}: its room is gone" in e.message),
            None,
        )

    await eventually(failed, 90, "the job failed: its room is gone")
    await status_equals(deployments, "ended", "jobsFailed", 1, timeout=30)

    async def gone() -> bool:
        return not await deployments.pods("ended")

    await eventually(gone, 60, "the job's pod removed")
    rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    assert not rooms.rooms, "no agent re-created the room"
    assert not any(e.reason == "JobResumed" for e in await deployments.events("ended"))
    assert "resumed the job" not in operator.log_text()


async def test_a_job_pod_the_operator_never_listed_is_resumed_when_its_runner_attaches(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """During a handover the leaving operator may still create a job's pod after the new one
    listed its pods: the new operator meets that pod only when its runner attaches (idle).
    Here such a pod is made from a real job pod, for another job and room, and signed as that
    operator signs it (same LiveKit secret). Its start request names another URL: the job is
    resumed on the spec's LiveKit URL, and nothing goes to the other one."""
    _, first, model = await slow_job(operator, deployments, k8s, livekit, lk, "late2")

    kept = resume.decode(model.metadata.annotations[ANNOTATION_START])
    assert kept is not None
    job = agent.Job.FromString(kept.job)
    job.id = f"AJ_{uuid.uuid4().hex[:12]}"
    job.room.name = room = f"room-{uuid.uuid4().hex[:6]}"
    kept.job = job.SerializeToString()
    kept.participant_identity = f"agent-{job.id}"
    elsewhere = Listener()
    kept.url = elsewhere.url
    pod = deployments.core.api_client.sanitize_for_serialization(model)
    meta = pod["metadata"]
    name = f"late2-{job.id.lower().replace('_', '-')}"
    meta["name"] = name
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    meta["labels"][LABEL_JOB_ID] = job.id
    meta["annotations"].update(
        {ANNOTATION_START: resume.encode(kept), ANNOTATION_ROOM: room, ANNOTATION_JOB_ID: job.id}
    )
    meta["annotations"].pop(ANNOTATION_DISPATCH_ID, None)
    pod.pop("status", None)
    pod["spec"].pop("nodeName", None)
    pod_trust.sign_pod(pod_trust.signing_key(livekit.api_secret), pod)
    await lk.room.create_room(api.CreateRoomRequest(name=room))  # the caller's room exists
    async with elsewhere.serving():
        await deployments.core.create_namespaced_pod(deployments.namespace, pod)
        joined = await wait_participant(lk, room, "agent-", timeout=90)
    assert joined.identity == f"agent-{job.id}"
    assert elsewhere.connections == 0, "the credentials went to the spec's URL only"
    assert "resumed the job" in operator.log_text()
    await wait_participant(lk, first, "agent-", timeout=60)  # the model's own job goes on
    await starts_reported(deployments, "late2", 2)
    for r in (first, room):
        await lk.room.delete_room(api.DeleteRoomRequest(room=r))
    await status_equals(deployments, "late2", "jobsSucceeded", 2, timeout=90)

    async def gone() -> bool:
        return not await deployments.pods("late2")

    await eventually(gone, 60, "both job pods removed")


async def test_livekit_restart_reregisters(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    test_env: TestEnvironment,
) -> None:
    if test_env.livekit_server is None:
        pytest.skip("needs the local livekit-server")
    await ready_deployment(deployments, operator, k8s, livekit, "resilient", "beacon_forever")
    before = (await deployments.get("resilient"))["status"]["workerId"]
    test_env.livekit_server.restart(down_for=2)

    async def reregistered() -> bool:
        status = (await deployments.get("resilient")).get("status") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("status") == "True" and status.get("workerId") not in ("", before)

    await eventually(reregistered, 90, "worker registered again after livekit-server restart")
    assert "agent_operator_worker_reconnects_total" in await operator.metrics()


async def test_bad_input_is_refused_or_reported_and_others_keep_working(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    bad_entrypoint = agent_deployment("bad1", livekit, "not an entrypoint")
    with pytest.raises(ApiException) as refused:
        await deployments.create(bad_entrypoint)
    assert refused.value.status == 422
    assert "spec.entrypoint" in str(refused.value.body)

    negative = agent_deployment("bad2", livekit, f"{AGENTS}:beacon_forever", maxConcurrentJobs=-1)
    with pytest.raises(ApiException) as refused:
        await deployments.create(negative)
    assert "maxConcurrentJobs" in str(refused.value.body)

    for target in (0, 1.5):
        load = agent_deployment("bad4", livekit, f"{AGENTS}:beacon_forever")
        load["spec"]["livekit"]["targetLoad"] = target
        with pytest.raises(ApiException) as refused:
            await deployments.create(load)
        assert "spec.livekit.targetLoad" in str(refused.value.body)

    pool = agent_deployment(
        "bad3", livekit, f"{AGENTS}:beacon_forever", maxConcurrentJobs=2, warmPool={"size": 3}
    )
    with pytest.raises(ApiException) as refused:
        await deployments.create(pool)
    assert "warmPool.size must not exceed maxConcurrentJobs" in str(refused.value.body)

    body = await ready_deployment(deployments, operator, k8s, livekit, "good", "beacon_forever")
    await deployments.create(
        agent_deployment("nosecret", livekit, f"{AGENTS}:beacon_forever", secret_name="missing")
    )
    cond = await deployments.wait_condition("nosecret", "Ready", "False")
    assert cond["reason"] == "SecretNotFound"
    assert "missing" in cond["message"]

    # the good one still serves
    await answered_call(lk, body["spec"]["agentName"])

    # fixing the secret makes the broken one ready, without touching the operator
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit, name="missing")
    await deployments.wait_condition("nosecret", "Ready", "True", timeout=60)
    assert operator.alive()


async def test_a_participant_template_that_cannot_render_is_an_invalid_spec(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """Defect 4: ``identityTemplate: "agent-{job_id"`` used to be accepted (Ready=True) and the
    first offer tore the worker connection down. Now it is InvalidSpec; fixed, it serves,
    and the identity LiveKit was told is the one the agent joins with."""
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = agent_deployment(
        "tmpl", livekit, f"{AGENTS}:beacon_forever", participant={"identityTemplate": "agent-{job_id"}
    )
    await deployments.create(body)
    await operator.wait_ready()

    async def invalid() -> dict[str, Any] | None:
        cond = await deployments.condition("tmpl", "Ready")
        return cond if cond and cond["status"] == "False" and cond["reason"] == "InvalidSpec" else None

    cond = await eventually(invalid, 60, "Ready=False with reason InvalidSpec")
    assert "participant.identityTemplate" in cond["message"]

    await deployments.patch("tmpl", {"spec": {"participant": {"identityTemplate": "agent-{room}-{job_id}"}}})
    await deployments.wait_condition("tmpl", "Ready", "True", timeout=60)
    room = f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    joined = await wait_participant(lk, room, f"agent-{room}-")
    assert joined.identity.startswith(f"agent-{room}-AJ_")
    page = await operator.metrics()
    assert metric_value(page, "agent_operator_worker_reconnects_total", deployment="tmpl") == 0
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_no_token_or_secret_leaks(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    body = await ready_deployment(deployments, operator, k8s, livekit, "quiet", "beacon_forever")
    room, _ = await answered_call(lk, body["spec"]["agentName"])
    pod = await job_pod(deployments, "quiet")
    await starts_reported(deployments, "quiet", 1)
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await status_equals(deployments, "quiet", "jobsSucceeded", 1)
    pod_text = repr(client.ApiClient().sanitize_for_serialization(pod))
    events = " ".join(f"{e.reason} {e.message}" for e in await deployments.events("quiet"))
    log_text = operator.log_text()
    assert log_text.count("\n") > 20, "the operator logged its work"
    assert livekit.api_secret not in pod_text + events + log_text
    # any JWT (a room token or the worker's token) would start with this header
    for text in (pod_text, events, log_text):
        assert "eyJhbGciOi" not in text


async def test_runner_that_cannot_start_fails_the_job_at_once(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """A pod whose container exits before its runner attaches fails the job now, not at the
    60 s start timeout."""
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = agent_deployment("broken", livekit, f"{AGENTS}:idle")
    body["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "echo no runner here; exit 7"]
    created = await deployments.create(body)
    await operator.wait_ready()
    await deployments.wait_condition("broken", "Ready", "True")
    t0 = time.monotonic()
    await dispatch(lk, created["spec"]["agentName"], f"room-{uuid.uuid4().hex[:6]}")
    await status_equals(deployments, "broken", "jobsFailed", 1, timeout=45)
    elapsed = time.monotonic() - t0
    assert elapsed < 40, f"took {elapsed:.1f}s: the start timeout (60s) decided, not the pod's exit"
    events = [e for e in await deployments.events("broken") if e.reason == "JobEnded"]
    assert any("exit code 7" in e.message for e in events), [e.message for e in events]


async def test_a_job_whose_pod_is_deleted_before_it_started_ends_as_failed(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    """Defect 2: a cold-path pod that never starts (bound to a node that is gone) is
    force-deleted, as for a lost node. The job ends as failed at once and its slot is free;
    before, the supervisor kept it open with no timer and LiveKit never heard."""
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    body = agent_deployment(
        "lost", livekit, f"{AGENTS}:idle", maxConcurrentJobs=1, heartbeat={"startTimeout": "600s"}
    )
    body["spec"]["template"]["spec"]["nodeName"] = "a-node-that-is-gone"
    created = await deployments.create(body)
    await operator.wait_ready()
    await deployments.wait_condition("lost", "Ready", "True")
    room = f"room-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, created["spec"]["agentName"], room)
    pod = await job_pod(deployments, "lost")
    assert pod.status.phase == "Pending"
    await status_equals(deployments, "lost", "activeJobs", 1, timeout=30)
    t0 = time.monotonic()
    await client.CoreV1Api(k8s).delete_namespaced_pod(
        pod.metadata.name, deployments.namespace, grace_period_seconds=0
    )
    status = await status_equals(deployments, "lost", "jobsFailed", 1, timeout=60)
    print(f"pod force-deleted -> job reported failed: {time.monotonic() - t0:.2f}s")
    assert status["activeJobs"] == 0, "the slot is free again"
    events = [e.message for e in await deployments.events("lost") if e.reason == "JobEnded"]
    assert any("deleted before its job ended" in m for m in events), events
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
