"""Running the operator as a real process in end-to-end tests, and the resources it serves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from devenv.environment import REPO_ROOT
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess, credentials_secret
from devenv.procs import free_port
from tests.support import environments

CRD_FILE = (
    REPO_ROOT / "charts" / "livekit-agent-operator" / "crds" / "agentdeployments.agentoperator.dev.yaml"
)
GROUP, VERSION, PLURAL = "agentoperator.dev", "v1alpha1", "agentdeployments"


async def install_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD_FILE.read_text())
    try:
        await ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = await ext.read_custom_resource_definition(body["metadata"]["name"])
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await ext.replace_custom_resource_definition(body["metadata"]["name"], body)

    async def established() -> bool:
        crd = await ext.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    await eventually(established, 30, "AgentDeployment CRD established")


async def release_deployments(api: client.ApiClient, namespace: str) -> None:
    """Drop the operator's finalizer from every AgentDeployment in ``namespace``.

    Test teardown, once no operator serves the namespace any more: without it, deleting the
    namespace leaves it Terminating for good, its AgentDeployments there for the next operator
    that watches all namespaces to find."""
    custom = client.CustomObjectsApi(api)

    async def listing() -> dict[str, Any]:  # retried: 429 while the CRD's storage initializes
        listed: dict[str, Any] = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return listed

    for item in (await eventually(listing, 30, f"AgentDeployments of {namespace}"))["items"]:
        if not item["metadata"].get("finalizers"):
            continue
        try:
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                item["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


async def no_other_deployments(k8s: client.ApiClient, mine: set[str]) -> None:
    """Wait until no AgentDeployment exists outside ``mine``: an operator serving all namespaces
    would serve them too. Earlier tests' namespaces are being deleted (the ``ns`` fixture
    releases their AgentDeployments), which takes a few seconds."""
    custom = client.CustomObjectsApi(k8s)

    async def none_left() -> bool:
        listed = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return not [i for i in listed["items"] if i["metadata"]["namespace"] not in mine]

    await eventually(none_left, 90, "other tests' AgentDeployments to go before serving all namespaces")


class OperatorProcess:
    """``agent-operator run`` as a subprocess, its JSON log lines kept in a file."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: list[str],
        log_path: Path,
        reattach_grace: float = 5,
        extra_args: list[str] | None = None,
        runner_port: int | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_args = list(extra_args or [])
        self.namespaces = namespaces
        self.log_path = log_path
        # two operators may share one (gRPC sets SO_REUSEPORT), like two pods behind a Service
        self.runner_port = runner_port or free_port()
        self.metrics_port = free_port()
        self.reattach_grace = reattach_grace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "agent_operator.cli",
            "run",
            # where pods reach it: the node IP when they are containers on the real node
            f"--runner-bind={environments.node_ip()}:{self.runner_port}",
            f"--runner-address={environments.node_ip()}:{self.runner_port}",
            f"--metrics-bind=127.0.0.1:{self.metrics_port}",
            f"--kubeconfig={self.kubeconfig}",
            f"--reattach-grace={self.reattach_grace}",
            "--log-level=DEBUG",
        ]
        argv += [f"--namespace={ns}" for ns in self.namespaces]
        argv += self.extra_args
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        log.close()

    async def readyz(self) -> str:
        """What /readyz answers, as "<status> <text>" (e.g. "200 standby")."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/readyz") as r,
        ):
            return f"{r.status} {await r.text()}"

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            return (await self.readyz()).startswith("200 ")

        try:
            await eventually(ready, timeout, "operator /readyz")
        except TimeoutError as exc:  # what it was doing, for the failure's report
            raise TimeoutError(f"{exc}\n{self.process_state()}\nits log's tail:\n{self.tail(30)}") from None

    def process_state(self) -> str:
        """The process's state and what it waits in, from /proc."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"exited with {self.proc.returncode}"
        proc = Path(f"/proc/{self.proc.pid}")
        try:
            state = next(x for x in (proc / "status").read_text().splitlines() if x.startswith("State:"))
            wchan = (proc / "wchan").read_text()
        except (OSError, StopIteration) as exc:
            return f"pid {self.proc.pid}: {exc}"
        return f"pid {self.proc.pid} {state}, waiting in {wchan or '-'}"

    async def wait_exited(self, timeout: float) -> int:
        """Its exit code, once it has exited (after a signal sent without waiting)."""

        async def exited() -> bool:
            return not self.alive()

        await eventually(exited, timeout, "the operator exited")
        assert self.proc is not None
        return int(self.proc.returncode)

    async def metrics(self) -> str:
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r,
        ):
            return await r.text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, for fault injection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


async def create_credentials(
    core: client.CoreV1Api, namespace: str, livekit: LiveKitAccess, name: str = "lk"
) -> None:
    await core.create_namespaced_secret(namespace, credentials_secret(livekit, name))


def agent_deployment(
    name: str,
    livekit: LiveKitAccess,
    entrypoint: str,
    agent_name: str | None = None,
    secret_name: str = "lk",
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An AgentDeployment whose pods run the real runner of the test agent image
    (``agent_container``). ``container`` sets fields of the agent container (resources, probes, image).
    Failover is off unless ``failover`` is given: the fault tests see a dead runner's job end
    (the way it ends when failover is off or its budget is spent); ``test_failover`` turns it on."""
    spec.setdefault("failover", {"enabled": False})
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentDeployment",
        "metadata": {"name": name},
        "spec": {
            "livekit": {"url": livekit.url, "credentialsSecretRef": {"name": secret_name}},
            "agentName": agent_name if agent_name is not None else f"{name}-{uuid.uuid4().hex[:4]}",
            "entrypoint": entrypoint,
            "template": {
                "spec": {
                    "containers": [
                        {**agent_container(), **(container or {})},
                    ]
                }
            },
            **spec,
        },
    }
    return body


def agent_container() -> dict[str, Any]:
    """The agent container of a test deployment: the test agent image as imported into the
    node (its entrypoint is the runner; no ``command``)."""
    return {
        "name": "agent",
        "image": environments.agent_image(),
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "AGENT_LOG_LEVEL", "value": "DEBUG"}],
    }


class Deployments:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    async def get(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = await self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return got

    async def patch(self, name: str, patch: dict[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch, _content_type="application/merge-patch+json"
        )

    async def delete(self, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    async def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        status = (await self.get(name)).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == ctype), None)

    async def wait_condition(self, name: str, ctype: str, status: str, timeout: float = 60) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            cond = await self.condition(name, ctype)
            return cond if cond and cond["status"] == status else None

        return await eventually(check, timeout, f"{name} {ctype}={status}")

    async def pods(self, name: str) -> list[Any]:
        pods = await self.core.list_namespaced_pod(
            self.namespace, label_selector=f"agentoperator.dev/deployment={name}"
        )
        return list(pods.items)

    async def events(self, name: str) -> list[Any]:
        events = await self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return list(events.items)


async def wait_participant(lk: Any, room: str, identity_prefix: str, timeout: float = 90) -> Any:
    """The participant once it is ACTIVE (media connected), not merely joining."""
    from livekit import api
    from livekit.protocol import models

    async def find() -> Any:
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        return next(
            (
                p
                for p in resp.participants
                if p.identity.startswith(identity_prefix) and p.state == models.ParticipantInfo.ACTIVE
            ),
            None,
        )

    return await eventually(find, timeout, f"participant {identity_prefix}* in room {room}", interval=0.05)


AGENTS = "tests.agents.stream_agents"


async def dispatch(
    lk: api.LiveKitAPI, agent_name: str, room: str, empty_timeout: int = 60, metadata: str = ""
) -> Any:
    """Dispatch the agent to a new room that LiveKit closes ``empty_timeout`` seconds after it
    has no participant but the agent (the job then ends); ``metadata``: the job's."""
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=empty_timeout))
    return await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
    )


async def answered_call(lk: api.LiveKitAPI, agent_name: str, room_prefix: str = "room") -> tuple[str, Any]:
    """A call dispatched to ``agent_name`` in a new room, once its agent is in the room: the
    room and the agent participant."""
    room = f"{room_prefix}-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, room)
    return room, await wait_participant(lk, room, "agent-")


async def ready_deployment(
    deployments: Deployments,
    operator: OperatorProcess,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    name: str,
    entrypoint: str,
    **spec: Any,
) -> dict[str, Any]:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit) if not spec.pop(
        "_no_secret", False
    ) else None
    if ":" not in entrypoint:
        entrypoint = f"{AGENTS}:{entrypoint}"
    body = await deployments.create(agent_deployment(name, livekit, entrypoint, **spec))
    await operator.wait_ready()
    await deployments.wait_condition(name, "Ready", "True", timeout=60)
    return body


@contextlib.asynccontextmanager
async def leader_and_standby(
    kubeconfig: Path,
    namespace: str,
    logs: Path,
    leader_kubeconfig: Path | None = None,
    leader_args: Sequence[str] = (),
) -> AsyncIterator[tuple[OperatorProcess, OperatorProcess]]:
    """Two operators with leader election in ``namespace``: ``a`` leads, ``b`` stands by (both
    ready); both are stopped afterwards."""
    election = [f"--leader-election-namespace={namespace}"]
    leader = OperatorProcess(
        leader_kubeconfig or kubeconfig,
        [namespace],
        logs / f"operator-{namespace}-a.log",
        extra_args=[*election, "--identity=a", *leader_args],
    )
    standby = OperatorProcess(
        kubeconfig, [namespace], logs / f"operator-{namespace}-b.log", extra_args=[*election, "--identity=b"]
    )
    leader.start()
    try:
        await leader.wait_ready()
        standby.start()
        await standby.wait_ready()
        assert await standby.readyz() == "200 standby"
        yield leader, standby
    finally:
        leader.stop()
        standby.stop()


def deploy_pair(
    kubeconfig: Path, namespace: str, logs: Path, handover_timeout: float
) -> tuple[OperatorProcess, OperatorProcess]:
    """A deploy's two operators, not started: the leaving one ("old") and the next ("new"),
    with leader election in ``namespace``, sharing one runner port (gRPC sets SO_REUSEPORT)
    as two pods share a Service."""
    election = [f"--leader-election-namespace={namespace}", f"--handover-timeout={handover_timeout:g}"]
    old = OperatorProcess(
        kubeconfig,
        [namespace],
        logs / f"operator-{namespace}-old.log",
        extra_args=[*election, "--identity=old"],
    )
    new = OperatorProcess(
        kubeconfig,
        [namespace],
        logs / f"operator-{namespace}-new.log",
        extra_args=[*election, "--identity=new"],
        runner_port=old.runner_port,
    )
    return old, new


@contextlib.asynccontextmanager
async def deploy_under_way(
    kubeconfig: Path, namespace: str, logs: Path, lk: api.LiveKitAPI, handover_timeout: float
) -> AsyncIterator[tuple[OperatorProcess, OperatorProcess, list[str]]]:
    """A deploy's two operators (``deploy_pair``), the old one started, the next one not yet,
    and a list for the rooms the test dispatches. Afterwards those rooms are deleted, the next
    operator is resumed if the test froze it (SIGSTOP), and both are stopped."""
    old, new = deploy_pair(kubeconfig, namespace, logs, handover_timeout)
    rooms: list[str] = []
    old.start()
    try:
        yield old, new, rooms
    finally:
        for room in rooms:
            with contextlib.suppress(api.TwirpError):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        if new.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                new.proc.send_signal(signal.SIGCONT)
        old.stop()
        new.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of the first sample of ``name`` with these labels in a /metrics page."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels or ''} not in the metrics")


def reasons_counted(text: str, name: str, deployment: str, reasons: Iterable[str]) -> float:
    """The sum of ``name``'s samples for ``deployment`` over ``reasons`` in a /metrics page (a
    reason without a sample adds nothing): a pod failure may be counted under any of them."""
    counted = 0.0
    for reason in reasons:
        with contextlib.suppress(AssertionError):
            counted += metric_value(text, name, deployment=deployment, reason=reason)
    return counted


async def idle_pods(deployments: Deployments, name: str) -> list[Any]:
    """The deployment's warm-pool pods labelled idle and not being deleted."""
    pods = await deployments.pods(name)
    return [
        p
        for p in pods
        if p.metadata.labels.get("agentoperator.dev/state") == "idle" and not p.metadata.deletion_timestamp
    ]


async def new_idle_pods(
    deployments: Deployments, name: str, before: set[str], timeout: float = 120
) -> set[str]:
    """The uids of the deployment's idle pool pods once one of them is not in ``before`` (the
    pool made it after a call took one). Waited for by the pods: the status may still count
    the taken pod as idle."""

    async def refilled() -> set[str] | None:
        now = {p.metadata.uid for p in await idle_pods(deployments, name)}
        return now if now - before else None

    found: set[str] = await eventually(refilled, timeout, f"a new idle pool pod of {name}")
    return found


async def job_pod(deployments: Deployments, name: str, timeout: float = 60) -> Any:
    async def one() -> Any:
        pods = await deployments.pods(name)
        return pods[0] if len(pods) == 1 else None

    return await eventually(one, timeout, f"one pod of {name}")


async def pid(deployments: Deployments, pod: Any) -> int:
    """The host PID of the pod's runner (``environments.runner_host_pid``)."""

    async def read() -> int | None:
        got = await deployments.core.read_namespaced_pod(pod.metadata.name, deployments.namespace)
        return await asyncio.to_thread(environments.runner_host_pid, got)  # asks containerd

    return await eventually(read, 30, "runner pid")


async def starts_reported(deployments: Deployments, name: str, count: int, timeout: float = 60) -> None:
    """Until the operator has heard ``count`` runners report their start. A call hung up before
    its runner's start report ends its job as failed (the agent was not up yet): a test that
    ends calls and expects successes waits for this first, however quickly the agent joined."""

    async def check() -> bool:
        status = (await deployments.get(name)).get("status") or {}
        return int(status.get("jobsStarted", 0)) >= count

    await eventually(check, timeout, f"{name} status jobsStarted>={count}")


# a job's start, as the operator logs it: started, or re-adopted running (its runner started
# it while the operators changed, and re-attached with it)
STARTED_LINE = re.compile(r'"msg": "(job started in |re-adopted a running job)')


async def starts_logged(
    operators: Sequence[OperatorProcess], rooms: Iterable[str], timeout: float = 60
) -> None:
    """``starts_reported`` across operators (a restart or a handover): until each room's job
    is logged started by one of them (``STARTED_LINE``)."""
    wanted = list(rooms)

    async def check() -> bool:
        text = "\n".join(op.log_text() for op in operators)
        lines = [line for line in text.splitlines() if STARTED_LINE.search(line)]
        return all(any(f'"room": "{room}"' in line for line in lines) for room in wanted)

    await eventually(check, timeout, f"the start of the jobs of {wanted} logged")


async def status_equals(
    deployments: Deployments, name: str, key: str, value: int, timeout: float = 60
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = (await deployments.get(name)).get("status") or {}
        return status if status.get(key) == value else None

    return await eventually(check, timeout, f"{name} status {key}={value}")


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
