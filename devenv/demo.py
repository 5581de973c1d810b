"""`make demo`: what a user sees on their own cluster, shown on the local one.

Brings up the local cluster on a real node (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS) and livekit-server, imports the
images ``make images`` built, ``helm install``s the chart (devenv/helm_release.py), applies the
example AgentDeployment (manifests/examples/agentdeployment.yaml) running the shipped voice agent
(``agent_jobrunner.examples.voice``, in the voice-agent example image) and places a call: a
caller speaks a question (espeak-ng) into the room; the demo prints what the agent heard and
what it answered, the pod it ran in, the AgentDeployment's status columns, its Events and the
job's metrics (the operator's /metrics). With ``--oneshot`` it stops after the call; otherwise
everything keeps running until Ctrl-C. Run it as ``make demo`` (inside devenv/netns-run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from livekit import api

from devenv.caller import Caller
from devenv.environment import REPO_ROOT, TestEnvironment
from devenv.helm_release import OperatorRelease, load_operator_image
from devenv.images import find_images
from devenv.kubeclient import api_client, create_namespace, eventually
from devenv.livekit import LiveKitAccess, credentials_secret
from devenv.speech import speak, transcribe

EXAMPLE = REPO_ROOT / "manifests" / "examples" / "agentdeployment.yaml"
GROUP, VERSION, PLURAL = "agentoperator.dev", "v1alpha1", "agentdeployments"
NAMESPACE = "demo"
SECRET = "livekit-credentials"  # the Secret the example names
ENTRYPOINT = "agent_jobrunner.examples.voice:entrypoint"
QUESTION = "What is the weather in Paris?"
# what each role's MessageAdded says, in the demo's words
ROLES = {"user": "the agent heard", "assistant": "the agent answered", "tool": "its tool returned"}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"  # what `kubectl get` asks for
METRICS_SHOWN = (
    "agent_operator_jobs_",
    "agent_operator_job_start_latency_seconds_sum",
    "agent_operator_job_start_latency_seconds_count",
    "agent_operator_job_placements_total",
    "agent_operator_worker_connected",
    "agent_operator_pool_",
)


def example_deployment(livekit: LiveKitAccess, image: str) -> dict[str, Any]:
    """The example AgentDeployment with what a user fills in: their LiveKit URL, their agent's
    entrypoint and image (here the shipped voice agent's), pulled only if not on the node.
    One idle pod instead of two: this machine is small."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = body["spec"]
    spec["livekit"]["url"] = livekit.url
    spec["entrypoint"] = ENTRYPOINT
    spec["warmPool"]["size"] = 1
    container = spec["template"]["spec"]["containers"][0]
    container["image"] = image
    container["imagePullPolicy"] = "IfNotPresent"
    return body


async def status_of(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    body = await custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    return dict(body.get("status") or {})


async def status_columns(k8s: client.ApiClient, namespace: str) -> list[str]:
    """The AgentDeployments as ``kubectl get agentdeployments -o wide`` prints them (the
    API server's Table of the CRD's printer columns)."""
    table: dict[str, Any] = await k8s.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        "GET",
        header_params={"Accept": TABLE},
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    names = [c["name"].upper() for c in table["columnDefinitions"]]
    rows = [[str(cell) for cell in row["cells"]] for row in table["rows"]]
    widths = [max(len(x) for x in column) for column in zip(names, *rows, strict=True)]
    return ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) for line in [names, *rows]]


def job_conversation(operator_log: str, job_id: str) -> list[tuple[str, str]]:
    """(role, text) of the voice agent's MessageAdded events of one job, from the operator's
    JSON log lines (the runner streams its records to the operator, which logs them)."""
    said = []
    for line in operator_log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("job_id") == job_id and record.get("event") == "MessageAdded":
            said.append((str(record.get("role")), str(record.get("content"))))
    return said


async def agent_joined(lk: api.LiveKitAPI, room: str, since: float) -> float:
    """Seconds from ``since`` until an agent participant is in ``room``."""

    async def agent() -> bool:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        return any(p.identity.startswith("agent-") for p in listed.participants)

    await eventually(agent, 120, f"an agent in room {room}", interval=0.05)
    return time.monotonic() - since


async def call(
    lk: api.LiveKitAPI, livekit: LiveKitAccess, agent_name: str, room: str, question: str
) -> tuple[str, float]:
    """A caller asks ``question`` and listens; (what the caller heard, dispatch -> agent joined)."""
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=120))
    caller = Caller()
    try:
        t0 = time.monotonic()
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
        await caller.join(livekit, room)
        joined = await agent_joined(lk, room, t0)
        await caller.wait_agent_track(180)
        listening = time.monotonic() - t0
        print(
            f"\nthe agent joined room {room} {joined:.1f}s after the dispatch and listened "
            f"{listening:.1f}s after it (its voice models load in the job); the caller asks: {question!r}"
        )
        _, said = await caller.say(await speak(question))
        start = await caller.agent_starts(said)
        end = await caller.agent_stops(said)
        heard = await transcribe(caller.audio(start - 0.3, end + 0.3))
    finally:
        await caller.leave()
    return heard, joined


async def demo(env: TestEnvironment, oneshot: bool, question: str = QUESTION) -> None:
    assert env.kube is not None
    assert env.livekit is not None
    assert env.node is not None
    livekit = env.livekit
    images = find_images(["operator", "voice-agent"])
    voice = images["voice-agent"]
    env.node.import_image(voice.archive)
    operator_image = load_operator_image(env.node, images["operator"])
    async with await api_client(env.kube.kubeconfig) as k8s:
        core = client.CoreV1Api(k8s)
        custom = client.CustomObjectsApi(k8s)
        release = OperatorRelease(env.kube.kubeconfig)
        print(
            f"helm install {release.release} charts/livekit-agent-operator -n {release.namespace} "
            f"(image {operator_image})"
        )
        seconds = await release.install(core, operator_image)
        leader = await release.leader_pod(core)
        print(
            f"  the operator pod {leader.metadata.name} is up {seconds:.1f}s later; "
            f"runners dial {release.runner_address}"
        )

        await create_namespace(core, NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"})
        await core.create_namespaced_secret(NAMESPACE, credentials_secret(livekit, SECRET))
        body = example_deployment(livekit, voice.tag)
        name, agent_name = body["metadata"]["name"], body["spec"]["agentName"]
        t0 = time.monotonic()
        await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

        async def pool_ready() -> bool:
            return (await status_of(custom, name)).get("idlePods") == 1

        await eventually(pool_ready, 180, "the AgentDeployment registered, with one idle runner pod")
        print(
            f"\nAgentDeployment {name} (manifests/examples/agentdeployment.yaml, image {voice.tag}) is "
            f"registered with LiveKit as {agent_name!r}; one idle runner pod waits "
            f"({time.monotonic() - t0:.1f}s):"
        )
        for line in await status_columns(k8s, NAMESPACE):
            print(f"  {line}")

        room = f"demo-{uuid.uuid4().hex[:4]}"
        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            heard, _ = await call(lk, livekit, agent_name, room, question)
            pods = await core.list_namespaced_pod(
                NAMESPACE, label_selector=f"agentoperator.dev/deployment={name}"
            )
            busy = [p for p in pods.items if (p.metadata.labels or {}).get("agentoperator.dev/job-id")]
            job_id = busy[0].metadata.labels["agentoperator.dev/job-id"] if busy else ""
            for pod in busy:
                print(
                    f"  the job {job_id} ran in pod {pod.metadata.name} (node {pod.spec.node_name}, "
                    f"image {pod.spec.containers[0].image})"
                )
            conversation = job_conversation(await release.logs(core, leader.metadata.name), job_id)
            for role, text in conversation:
                if text:
                    print(f"  {ROLES.get(role, role)}: {text!r}")
            print(f"  the caller heard the agent say: {heard!r}")
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

        async def ended() -> bool:
            status = await status_of(custom, name)
            done = int(status.get("jobsSucceeded", 0)) + int(status.get("jobsFailed", 0))
            return done >= 1 and status.get("activeJobs") == 0

        await eventually(ended, 120, "the job to end and its pod to go")
        print(f"\nroom {room} closed: the job ended and its pod went; the pool refills:")
        for line in await status_columns(k8s, NAMESPACE):
            print(f"  {line}")
        print(f"\nEvents of agentdeployment/{name}:")
        events = await core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
        for event in sorted(events.items, key=lambda e: e.metadata.creation_timestamp):
            print(f"  {event.type:<8} {event.reason:<16} {event.message}")
        print(f"\nMetrics of deployment {name} (the operator's /metrics, at its metrics Service's endpoint):")
        for line in (await release.metrics(client.DiscoveryV1Api(k8s))).splitlines():
            shown = line.startswith(METRICS_SHOWN) and f'deployment="{name}"' in line
            if shown and "_created{" not in line and not line.endswith(" 0.0"):
                print(f"  {line}")
        if not oneshot:
            print(f"\nKUBECONFIG={env.kube.kubeconfig}  (helm and kubectl reach the cluster with it)")
            print(f"LIVEKIT_URL={livekit.url} (api key {livekit.api_key}; secret in {env.workdir}/livekit)")
            print("everything keeps running; Ctrl-C to stop", flush=True)
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--oneshot", action="store_true", help="stop after the call")
    parser.add_argument("--question", default=QUESTION, help=f"what the caller asks (default {QUESTION!r})")
    args = parser.parse_args(argv)
    find_images(["operator", "voice-agent"])  # before anything starts: what to build, if missing
    workdir = Path(tempfile.mkdtemp(prefix="agent-operator-demo-"))
    env = TestEnvironment(workdir)
    t0 = time.monotonic()
    env.start()
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in env.timings.items())
    print(
        f"local cluster (real node) and livekit-server up in {time.monotonic() - t0:.1f}s "
        f"({parts}; logs: {workdir})"
    )
    try:
        asyncio.run(demo(env, args.oneshot, args.question))
    except KeyboardInterrupt:
        pass
    except BaseException:
        env.stop()
        print(f"the demo failed; the servers' and pods' logs are in {workdir}", file=sys.stderr)
        raise
    env.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # the node's images and containers: over 1 GB
    return 0


def leave(code: int) -> None:
    """Exit without finalizing the interpreter. The caller's livekit ``rtc`` leaves its Rust
    threads (livekit's FFI) running, and they call back into Python, with their log records,
    whenever they like. A thread that does so while the interpreter finalizes is stopped by it
    with ``pthread_exit``, whose unwinding through the FFI's Rust frames (which cannot unwind)
    aborts the process: SIGABRT, "panic in a function that cannot unwind", after a demo that
    had succeeded (CI-16). Everything is done by then; only the exit code is left to give."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
