"""The operator process's shared parts: API client, supervisor, and the deployments it serves.

Routes what the supervisor reports about a pod to the deployment of its binding, and pod
events to the deployment their label names; vouches for runner pods the supervisor was not
told about (after an operator restart) by their labels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from kopf import DaemonStoppingReason
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator.collaborators import Collaborators
from agent_operator.deployment import DeploymentRuntime
from agent_operator.handover import Handover
from agent_operator.kube import runner_tls_secret, timeouts
from agent_operator.kube.events import EventRecorder
from agent_operator.kube.pod_failures import PodFailure, pod_failure, probe_failure, probe_killable
from agent_operator.kube.pods import PodManager, PodTerminator, brief, pod_outcome
from agent_operator.kube.podspec import LABEL_DEPLOYMENT, LABEL_JOB_ID, Owner, RunnerSettings
from agent_operator.kube.secrets import read_credentials
from agent_operator.kube.status import StatusWriter
from agent_operator.kube.tokenreview import DEFAULT_AUDIENCE, TokenReviewAuthenticator
from agent_operator.listener_routing import DeploymentRouter
from agent_operator.spec import parse_spec
from agent_operator.supervisor import (
    HeartbeatSettings,
    NotServingRunners,
    PodIdentity,
    RunnerBinding,
    Supervisor,
    SupervisorSettings,
)
from agent_operator.supervisor.tls import ReloadingServerCertificate
from agent_operator.tasks import first_of

log = logging.getLogger("agent_operator.runtime")


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    runner_bind: str = "0.0.0.0:50051"
    runner_address: str = ""  # what runner pods dial; required
    token_audience: str = DEFAULT_AUDIENCE
    reattach_grace: float = 15.0
    kubeconfig: str | None = None
    default_heartbeat: HeartbeatSettings = dataclasses.field(default_factory=HeartbeatSettings)
    runner_tls: RunnerTLS | None = None  # None: plaintext gRPC, unless managed_tls
    managed_tls: ManagedTLS | None = None  # the operator's own CA and certificate, in a Secret


@dataclasses.dataclass(frozen=True)
class RunnerTLS:
    """The runner stream's TLS: the operator's certificate and key (loaded once at start, then
    re-read when they change), and the CA that runner pods are given to verify it."""

    certificate: ReloadingServerCertificate
    ca_pem: str


@dataclasses.dataclass(frozen=True)
class ManagedTLS:
    """TLS with a CA and serving certificate the operator makes and keeps in this Secret."""

    namespace: str
    secret: str


class DrainInterrupted(Exception):
    """The operator stopped before a deleted deployment had drained."""


def deletion_time(timestamp: str | None) -> float:
    """A deletionTimestamp (RFC 3339, UTC) as a wall-clock time; now if there is none."""
    if not timestamp:
        return time.time()
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def runner_host(address: str) -> str:
    """The host part of a runner address ("svc.ns.svc:50051" -> "svc.ns.svc", "[::1]:1" -> "::1")."""
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


async def kube_client(kubeconfig: str | None) -> client.ApiClient:
    """An API client from the kubeconfig (flag or $KUBECONFIG), else the in-cluster account."""
    cfg = client.Configuration()
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig and os.path.exists(kubeconfig):  # noqa: ASYNC240 - once, at start
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


class OperatorRuntime:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.handover = Handover()
        self.api: client.ApiClient = None  # set by start()
        self.supervisor: Supervisor = None  # type: ignore[assignment]
        self.pods: PodManager = None  # type: ignore[assignment]
        self.events: EventRecorder = None  # type: ignore[assignment]
        tls = config.runner_tls
        self.runner_settings = RunnerSettings(
            config.runner_address, config.token_audience, tls.ca_pem if tls else ""
        )
        self.deployments: dict[tuple[str, str], DeploymentRuntime] = {}
        self._grace: dict[str, int] = {}
        self.runner_port = 0
        self.exiting = asyncio.Event()
        self._drained: dict[str, bool] = {}  # deleted deployments' uid -> their drain's result
        self.router = DeploymentRouter(self._deployment_of)  # the supervisor's listener

    async def start(self) -> None:
        self.api = await kube_client(self.config.kubeconfig)
        self.pods = PodManager(self.api)
        self.events = EventRecorder(self.api)
        self.supervisor = Supervisor(
            TokenReviewAuthenticator(self.api, self.config.token_audience),
            PodTerminator(self.api),
            listener=self.router,
            settings=SupervisorSettings(
                reattach_grace=self.config.reattach_grace, default_heartbeat=self.config.default_heartbeat
            ),
            resolver=self.resolve,
        )
        tls = self.config.runner_tls
        credentials = tls.certificate.credentials() if tls is not None else None
        if self.config.managed_tls is not None:
            credentials = await self._managed_credentials(self.config.managed_tls)
        self.runner_port = await self.supervisor.start(self.config.runner_bind, credentials)

    async def _managed_credentials(self, managed: ManagedTLS) -> grpc.ServerCredentials:
        """Serve with the operator-managed certificate; runner pods get its CA."""
        host = runner_host(self.config.runner_address)
        pki = await runner_tls_secret.load_or_create(self.api, managed.namespace, managed.secret, (host,))
        self.runner_settings = dataclasses.replace(self.runner_settings, tls_ca_pem=pki.ca_cert_pem)
        return grpc.ssl_server_credentials([(pki.key_pem.encode(), pki.cert_pem.encode())])

    async def stop(self) -> None:
        self.begin_exit()
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.api is not None:
            await self.api.close()

    # -- deployments ----------------------------------------------------------------------------
    async def serve_deployment(
        self,
        owner: Owner,
        spec: dict[str, Any],
        generation: int,
        stopped: Any,
        deletion_timestamp: Callable[[], str | None],
        status: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve one AgentDeployment until kopf stops its daemon (``stopped``, a kopf flag),
        and drain it if it was deleted (``deletion_timestamp``: the live resource's).
        ``status``: the resource's, whose job counts this operator goes on from."""
        stopping = asyncio.Event()

        async def watch_flag() -> None:
            await stopped.wait()
            stopping.set()

        def deleted() -> float | None:
            if stopped.reason is None or not stopped.reason & DaemonStoppingReason.RESOURCE_DELETED:
                return None
            return deletion_time(deletion_timestamp())

        flag = asyncio.create_task(watch_flag())
        try:
            await self._run_deployment(owner, spec, generation, stopping, deleted, status)
        finally:
            flag.cancel()
            await asyncio.gather(flag, return_exceptions=True)

    async def finish_deletion(
        self,
        owner: Owner,
        spec: dict[str, Any],
        generation: int,
        deletion_timestamp: str | None,
        status: Mapping[str, Any] | None = None,
    ) -> bool:
        """kopf's on-delete handler: returns once the deployment has drained (True: no pod
        left; False: some outlasted the wait, told as an Event), and its finalizer may go.
        Raises ``DrainInterrupted`` if the operator stops first: the finalizer stays, and the
        next operator drains on, to the same deadline."""
        if owner.uid in self._drained:  # kopf may call again before it sees its own patch
            return self._drained[owner.uid]
        key = (owner.namespace, owner.name)
        dep = self.deployments.get(key)
        if dep is not None and dep.owner.uid == owner.uid:
            finished = asyncio.ensure_future(dep.finished.wait())
            try:
                await first_of(self.exiting, finished)
            finally:
                finished.cancel()
                await asyncio.gather(finished, return_exceptions=True)
            if dep.drain_result is not None:
                return dep.drain_result
        if self.exiting.is_set():
            raise DrainInterrupted("the operator is stopping; the next one drains on")
        # an operator (re)started after the deletion: kopf runs no daemon for a resource being
        # deleted, so the drain is resumed here (or the daemon failed before its drain)
        log.info(
            "resuming the drain of a deleted deployment",
            extra={"deployment": f"{owner.namespace}/{owner.name}"},
        )
        stopping = asyncio.Event()
        stopping.set()
        when = deletion_time(deletion_timestamp)
        dep = await self._run_deployment(owner, spec, generation, stopping, lambda: when, status)
        if dep.drain_result is None:
            raise DrainInterrupted("the operator is stopping; the next one drains on")
        return dep.drain_result

    async def _run_deployment(
        self,
        owner: Owner,
        spec: dict[str, Any],
        generation: int,
        stopping: asyncio.Event,
        deleted: Callable[[], float | None],
        status: Mapping[str, Any] | None = None,
    ) -> DeploymentRuntime:
        parsed, error = parse_spec(spec)
        dep = DeploymentRuntime(self.collaborators(), owner, parsed, generation)
        dep.ends.carry(status or {})
        if error:
            dep.update(None, generation, error)
        key = (owner.namespace, owner.name)
        self.deployments[key] = dep
        try:
            await dep.run(stopping, deleted, self.exiting)
        finally:
            if self.deployments.get(key) is dep:
                del self.deployments[key]
            if dep.drain_result is not None:
                self._drained[owner.uid] = dep.drain_result
        return dep

    def begin_exit(self) -> None:
        """The operator is stopping (a signal, or leadership lost): drains in progress stop
        and leave their pods to the next operator."""
        self.exiting.set()

    def collaborators(self) -> Collaborators:
        api = self.api
        return Collaborators(
            pods=self.pods,
            supervisor=self.supervisor,
            events=self.events,
            handover=self.handover,
            runner_settings=self.runner_settings,
            default_heartbeat=self.config.default_heartbeat,
            read_credentials=lambda namespace, ref: read_credentials(api, namespace, ref),
            status_writer=lambda owner: StatusWriter(api, owner),
            grace_of=self.grace_of,
        )

    def serving(self, namespace: str, name: str) -> bool:
        """This deployment's worker is registered, or it cannot be (a reason is in its status)."""
        dep = self.deployments.get((namespace, name))
        return dep is not None and (bool(dep.worker_id) or bool(dep.readiness.blocked))

    def deployment_changed(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        dep = self.deployments.get((meta.get("namespace", ""), meta.get("name", "")))
        if dep is None or meta.get("deletionTimestamp"):
            return
        parsed, error = parse_spec(body.get("spec") or {})
        dep.update(parsed, int(meta.get("generation", 0)), error)

    # -- pods -> deployments ----------------------------------------------------------------
    def grace_of(self, pod: PodIdentity) -> int | None:
        return self._grace.get(pod.uid)

    def _deployment_of(self, namespace: str, name: str) -> DeploymentRuntime | None:
        return self.deployments.get((namespace, name))

    async def resolve(self, pod: PodIdentity) -> RunnerBinding | None:
        """A runner the supervisor was not told about: ours if its pod says so."""
        if self.handover.active:
            # in a cluster the runner Service no longer sends runners here (the leader label)
            raise NotServingRunners("this operator is handing over; the next one takes new runners")
        try:
            found = await client.CoreV1Api(self.api).read_namespaced_pod(
                pod.name, pod.namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )
        except (ApiException, OSError, TimeoutError):
            return None
        if found.metadata.uid != pod.uid:
            return None
        deployment = (found.metadata.labels or {}).get(LABEL_DEPLOYMENT)
        owner = self._deployment_of(pod.namespace, deployment or "")
        if owner is None:
            return None
        # a job pod created after this operator listed its pods (by the one before it,
        # during a handover): its job is taken up like those found at start, if trusted
        if not owner.adoption.adopt(self.api.sanitize_for_serialization(found), jobs_only=True):
            return None
        job_id = (found.metadata.labels or {}).get(LABEL_JOB_ID, "")
        return owner.binding(pod, owner.heartbeat(), job_id)

    async def _probe_failure(self, pod: PodIdentity, fields: dict[str, str]) -> PodFailure | None:
        """A failed liveness (or startup) probe the kubelet stopped the pod's container for, as
        its Events tell; None when they do not (or cannot be read: the runner's word stands)."""
        try:
            return probe_failure(await self.pods.events(pod))
        except Exception as exc:
            log.warning("could not read the pod's Events: %s", brief(exc), extra=fields)
            return None

    async def on_pod_event(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        identity = PodIdentity(meta.get("namespace", ""), meta.get("name", ""), uid)
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        if grace is not None:
            self._grace[uid] = int(grace)
        phase = (pod.get("status") or {}).get("phase")
        owner = self._deployment_of(identity.namespace, (meta.get("labels") or {}).get(LABEL_DEPLOYMENT, ""))
        if event_type == "DELETED":
            self._grace.pop(uid, None)
            if owner is not None:
                await owner.pod_gone(identity, pod)
            await self.supervisor.forget(uid)
            return
        if owner is not None and owner.trust.distrusts(identity):
            return  # not taken as ours (kube.pod_trust): left for a person to look at, even finished
        failure = None if meta.get("deletionTimestamp") else pod_failure(pod)
        record = self.supervisor.job(uid)
        if failure is None and record is not None and record.outcome is None and probe_killable(pod):
            failure = await self._probe_failure(identity, record.log_fields())
        if failure is not None:  # before the exit: an OOM kill fails a running job too, at once
            if owner is not None:  # an idle pool pod: replaced, with backoff
                await owner.pool.failed(uid, failure.reason, failure.message)
            await self.supervisor.pod_failed(uid, failure.reason, failure.message)
        if phase in ("Succeeded", "Failed") and not meta.get("deletionTimestamp"):
            succeeded, detail = pod_outcome(pod)
            await self.supervisor.unit_exited(uid, detail, succeeded)
            # a finished runner pod is removed once its outcome is in (or it never attached);
            # its deployment hears of it once the delete returned: until then the API server
            # lists it live, and it counts against maxConcurrentJobs (warm_pool.room)
            record = self.supervisor.job(uid)
            job_id = (meta.get("labels") or {}).get(LABEL_JOB_ID, "")
            if record is None and job_id and (owner is None or job_id not in owner.jobs):
                # a job pod this operator never heard of (its runner died while none ran, and
                # the watch tells of it before the deployment lists its pods, or even before the
                # deployment runs here): the deployment judges it from what the pod kept (a
                # failover, or its end); not deleted here (a deleted deployment's pods go with it)
                if owner is not None:
                    owner.adoption.adopt(pod, jobs_only=True)
                return
            if record is None or record.outcome is not None:
                deleted = False
                try:
                    await self.pods.delete(identity)
                    deleted = True
                finally:  # its outcome is reported even when the delete failed
                    if owner is not None:
                        await owner.pod_gone(identity, pod, deleted)
