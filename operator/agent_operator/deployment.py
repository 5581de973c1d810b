"""One AgentDeployment at run time: its LiveKit worker, its jobs and their pods.

It answers LiveKit (availability from capacity, assignment -> pod -> runner), hears from
the supervisor how each job went, and keeps the resource's status and Events. Pods are the
record of running jobs: on start it re-adopts the pods it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.protocol import agent

from agent_jobrunner.protocol import pb
from agent_operator import decisions, metrics, resume
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.kube import pod_trust
from agent_operator.kube.pods import brief, transient
from agent_operator.kube.podspec import (
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_DEPLOYMENT,
    LABEL_JOB_ID,
    LABEL_STATE,
    LABEL_TEMPLATE,
    JobInfo,
    Owner,
    build_runner_pod,
)
from agent_operator.kube.secrets import Credentials, CredentialsError, read_credentials
from agent_operator.kube.status import Condition, StatusWriter
from agent_operator.spec import AUTO_SUBSCRIBE, DEFAULT_TARGET_LOAD, WORKER_TYPES, DeploymentSpec
from agent_operator.supervisor import (
    DeploymentRef,
    JobOutcome,
    JobRecord,
    OutcomeStatus,
    PodIdentity,
    RunnerBinding,
)
from agent_operator.supervisor.service import StartFailed
from agent_operator.tasks import BackgroundTasks
from agent_operator.warm_pool import WarmPool
from agent_operator.worker import WorkerConnection, WorkerOptions
from agent_operator.worker.rooms import room_exists

if TYPE_CHECKING:
    from agent_operator.runtime import OperatorRuntime

log = logging.getLogger("agent_operator.deployment")

HANDOVER_HOLD_SECONDS = 2.0  # LiveKit's job request times out after 3 s (psrpc's default)
RESERVATION_SECONDS = 15.0  # an accepted job whose assignment never came frees its slot
SECRET_RECHECK_SECONDS = 10.0
API_RETRY_SECONDS = 2.0  # while the API server is unreachable
STATUS_MIN_INTERVAL, STATUS_MAX_RETRY_INTERVAL = 0.5, 8.0
ATTRIBUTE_AGENT_NAME = "lk.agent.name"


@dataclasses.dataclass
class ActiveJob:
    job_id: str
    room: str
    pod: PodIdentity | None = None
    started: bool = False
    adopted: bool = False
    assigned_at: float = dataclasses.field(default_factory=time.monotonic)
    # adopted after a restart: the start request its pod keeps (token-less), for a runner
    # that attaches without the job (the previous operator stopped before sending it); taken
    # (None) once it is being sent
    start_request: pb.StartJobRequest | None = None


class DeploymentRuntime:
    def __init__(
        self, rt: OperatorRuntime, owner: Owner, spec: DeploymentSpec | None, generation: int
    ) -> None:
        self.rt = rt
        self.owner = owner
        self.ref = DeploymentRef(owner.namespace, owner.name)
        self.spec = spec
        self.generation = generation
        self.fields = {"deployment": str(self.ref)}
        self.jobs: dict[str, ActiveJob] = {}
        self.reserved: dict[str, float] = {}
        self.draining = False
        self.blocked = ""  # why this deployment cannot serve (spec or credentials)
        self.blocked_reason = ""
        self.worker: WorkerConnection | None = None
        self.worker_id = ""
        self.connect_error = ""
        self.counts = {"jobsStarted": 0, "jobsSucceeded": 0, "jobsFailed": 0}
        self.recent: list[OutcomeStatus] = []
        self.status_writer = StatusWriter(rt.api, owner)
        self.credentials: Credentials | None = None  # the worker's; they also sign resumed jobs' tokens
        self._credentials_ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._tasks = BackgroundTasks(log, "background call", self.fields)
        self._labels = (owner.namespace, owner.name)
        self.trust = DeploymentTrust(owner, self.fields, self._event)
        self.pool = WarmPool(self)

    def mark_dirty(self) -> None:
        self._dirty.set()

    # -- lifecycle ----------------------------------------------------------------------------
    def update(self, spec: DeploymentSpec | None, generation: int, error: str = "") -> None:
        """A new generation of the resource (from the watch)."""
        if generation == self.generation and spec == self.spec:
            return
        self.spec, self.generation = spec, generation
        if error:
            self._block("InvalidSpec", error)
        elif self.blocked_reason == "InvalidSpec":
            self.blocked = self.blocked_reason = ""
        self._changed.set()
        self._dirty.set()
        self.pool.wake()

    async def run(self, stopping: asyncio.Event, deleted: Callable[[], bool]) -> None:
        """Serve until ``stopping``; drain first if the resource was deleted."""
        metrics.init_deployment(*self._labels)
        await self._adopt_existing_pods()
        status = asyncio.create_task(self._status_loop(), name=f"status {self.ref}")
        pool = asyncio.create_task(self.pool.run(), name=f"pool {self.ref}")
        worker: asyncio.Task[None] | None = None
        key: tuple[object, ...] | None = None
        creds: Credentials | None = None
        try:
            while not stopping.is_set():
                self._changed.clear()
                spec = self.spec
                recheck = SECRET_RECHECK_SECONDS
                if spec is not None and self.blocked_reason != "InvalidSpec":
                    try:
                        new_creds = await read_credentials(
                            self.rt.api, self.owner.namespace, spec.credentials
                        )
                    except CredentialsError as exc:
                        self._block(exc.reason, str(exc))
                        new_creds = None
                    except Exception as exc:
                        if not transient(exc):
                            raise
                        # the API server is away: what we have keeps working (the worker and
                        # running calls need no API call); look again soon
                        log.warning(
                            "could not re-read the LiveKit credentials, keeping the current ones: %s",
                            _short(exc),
                            extra=self.fields,
                        )
                        new_creds, recheck = creds, API_RETRY_SECONDS
                    else:
                        if self.blocked_reason not in ("", "InvalidSpec"):
                            log.info("credentials usable again", extra=self.fields)
                        if self.blocked_reason != "InvalidSpec":
                            self.blocked = self.blocked_reason = ""
                    new_key = (spec.registration_key(), new_creds)
                    if new_creds is None or new_key != key:
                        if worker is not None:
                            log.info(
                                "re-registering the worker (LiveKit settings or credentials changed)",
                                extra=self.fields,
                            )
                            await self._stop_worker(worker)
                            worker = None
                        key = None
                    if new_creds is not None and worker is None:
                        worker = self._start_worker(spec, new_creds)
                        key, creds = new_key, new_creds
                        self.credentials = new_creds
                        self.trust.use(new_creds)
                        self._credentials_ready.set()
                elif worker is not None:
                    await self._stop_worker(worker)
                    worker, key = None, None
                self._dirty.set()
                waiters = {
                    asyncio.ensure_future(stopping.wait()),
                    asyncio.ensure_future(self._changed.wait()),
                }
                _, pending = await asyncio.wait(waiters, timeout=recheck, return_when=asyncio.FIRST_COMPLETED)
                for fut in pending:
                    fut.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            if deleted():
                await self._drain()
        finally:
            if worker is not None:
                await self._stop_worker(worker)
            status.cancel()
            pool.cancel()
            await asyncio.gather(status, pool, return_exceptions=True)
            await self._tasks.close()
            del creds
            self.credentials = None
            self.trust.use(None)
            if stopping.is_set() and deleted():
                metrics.forget_deployment(*self._labels)

    def _start_worker(self, spec: DeploymentSpec, creds: Credentials) -> asyncio.Task[None]:
        options = WorkerOptions(
            url=spec.livekit_url,
            api_key=creds.api_key,
            api_secret=creds.api_secret,
            agent_name=spec.agent_name,
            worker_type=WORKER_TYPES[spec.worker_type],
            namespace=spec.worker_namespace,
            permissions=spec.participant_permission(),
        )
        self.worker = WorkerConnection(options, self, self.fields)
        return asyncio.create_task(self.worker.run(), name=f"worker {self.ref}")

    async def _stop_worker(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.worker is not None:
            await self.worker.close()
        self.worker = None
        self.worker_id = ""
        metrics.WORKER_CONNECTED.labels(*self._labels).set(0)

    def _block(self, reason: str, message: str) -> None:
        if (self.blocked_reason, self.blocked) != (reason, message):
            log.warning("deployment cannot serve: %s", message, extra=self.fields)
            self._event("NotReady" if reason != "InvalidSpec" else "InvalidSpec", message, warning=True)
        self.blocked_reason, self.blocked = reason, message
        self._dirty.set()

    # -- capacity -----------------------------------------------------------------------------
    def capacity(self) -> decisions.Capacity:
        now = time.monotonic()
        for job_id in [j for j, deadline in self.reserved.items() if deadline < now]:
            del self.reserved[job_id]
        return decisions.Capacity(
            max_jobs=self.spec.max_concurrent_jobs if self.spec else 0,
            running=len(self.jobs),
            reserved=len(self.reserved),
            registered=bool(self.worker_id),
            draining=self.draining,
            target_load=self.spec.target_load if self.spec else DEFAULT_TARGET_LOAD,
            blocked_reason=self.blocked,
        )

    # -- WorkerHandler: what LiveKit asks ------------------------------------------------------
    def availability(self, request: agent.AvailabilityRequest) -> agent.AvailabilityResponse | None:
        job = request.job
        if job.id in self.jobs:  # the server offers a job we already run (after a reconnect)
            return agent.AvailabilityResponse(job_id=job.id, available=False)
        if self.rt.handover.active and self.worker is not None:
            self._spawn(self._pass_on(self.worker, job))
            return None  # answered by _pass_on
        verdict = decisions.availability(self.capacity())
        metrics.AVAILABILITY_ANSWERS.labels(
            *self._labels, "yes" if verdict.accept else "no", verdict.reason
        ).inc()
        fields = {**self.fields, "job_id": job.id, "room": job.room.name}
        if not verdict.accept or self.spec is None:
            log.info("declined job (%s)", verdict.reason, extra=fields)
            return agent.AvailabilityResponse(job_id=job.id, available=False)
        try:
            identity = decisions.render(self.spec.identity_template, job, self.owner.name)
            name = (
                decisions.render(self.spec.name_template, job, self.owner.name)
                if self.spec.name_template
                else ""
            )
        except KeyError as exc:
            log.warning("declined job: participant template: %s", exc, extra=fields)
            return agent.AvailabilityResponse(job_id=job.id, available=False)
        self.reserved[job.id] = time.monotonic() + RESERVATION_SECONDS
        log.info("accepted job", extra=fields)
        attributes = {ATTRIBUTE_AGENT_NAME: self.spec.agent_name, **self.spec.participant_attributes}
        return agent.AvailabilityResponse(
            job_id=job.id,
            available=True,
            participant_identity=identity,
            participant_name=name,
            participant_metadata=self.spec.participant_metadata,
            participant_attributes=attributes,
        )

    async def _pass_on(self, worker: WorkerConnection, job: agent.Job) -> None:
        """An offer during a handover: hold it until the next operator serves, then decline it.

        LiveKit then offers the job to its next available worker, which by then is the new
        operator's. The hold is bounded: LiveKit gives up on a job request after 3 s.
        """
        fields = {**self.fields, "job_id": job.id, "room": job.room.name}
        held = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.rt.handover.successor_ready.wait(), HANDOVER_HOLD_SECONDS)
        metrics.AVAILABILITY_ANSWERS.labels(*self._labels, "no", "handover").inc()
        log.info("passed the job on to the next operator (held %.2fs)", time.monotonic() - held, extra=fields)
        await worker.answer(agent.AvailabilityResponse(job_id=job.id, available=False))

    async def assignment(self, assignment: agent.JobAssignment) -> None:
        job = assignment.job
        self.reserved.pop(job.id, None)
        fields = {**self.fields, "job_id": job.id, "room": job.room.name}
        spec = self.spec
        if job.id in self.jobs or spec is None:
            log.warning("ignored assignment of a job already running here", extra=fields)
            return
        entry = ActiveJob(job.id, job.room.name)
        self.jobs[job.id] = entry
        metrics.JOBS_ASSIGNED.labels(*self._labels).inc()
        self._dirty.set()
        request = self._start_request(assignment, spec)
        warm = self.pool.take(spec.template_hash())
        if warm is not None:
            # warm path: the runner is attached and idle; no API call before it gets the job
            pod = PodIdentity(warm.namespace, warm.name, warm.uid)
            entry.pod = pod
            metrics.JOB_STARTS_BY_PATH.labels(*self._labels, "warm").inc()
            try:
                await self.rt.supervisor.assign(pod.uid, request)
            except StartFailed as exc:
                await self._fail_unstarted(entry, str(exc))
                return
            log.info("job assigned to idle pool pod", extra={**fields, "pod": str(pod)})
            info = self._job_info(job, request, fields)
            signature = self.trust.busy_signature(pod, warm.template_hash, info)
            self._spawn(self.rt.pods.mark_busy(pod, info, signature))
            self._event(
                "JobAssigned", f"job {job.id} in room {job.room.name}: idle pod {pod.name} (warm pool)"
            )
            return
        metrics.JOB_STARTS_BY_PATH.labels(*self._labels, "cold").inc()
        name = decisions.pod_name(self.owner.name, job.id, secrets.token_hex(2))
        info = self._job_info(job, request, fields)
        body = self.trust.seal(build_runner_pod(self.owner, spec, self.rt.runner_settings, name, info))
        try:
            # a job may start as late as its start timeout: ride out an API server blip
            pod = await self.rt.pods.create(body, retry_for=spec.heartbeat.start_timeout, log_fields=fields)
        except Exception as exc:
            await self._fail_unstarted(entry, f"could not create the job's pod: {_short(exc)}")
            return
        entry.pod = pod
        log.info("job assigned; pod created (cold path)", extra={**fields, "pod": str(pod)})
        self._event("JobAssigned", f"job {job.id} in room {job.room.name}: pod {pod.name} created")
        self.rt.track_pod(pod, self)
        self.rt.supervisor.expect(RunnerBinding(pod, self.ref, spec.heartbeat, job_id=job.id))
        try:
            await self.rt.supervisor.assign(pod.uid, request)
        except StartFailed as exc:
            await self._fail_unstarted(entry, str(exc))

    @staticmethod
    def _job_info(job: agent.Job, request: pb.StartJobRequest, fields: dict[str, str]) -> JobInfo:
        """What the job's pod keeps of it (see ``resume``)."""
        kept = resume.encode(request)
        if not kept:
            log.warning(
                "job too big to keep on its pod: an operator restart before it starts loses it", extra=fields
            )
        return JobInfo(job.id, job.room.name, job.dispatch_id, kept)

    def _start_request(self, assignment: agent.JobAssignment, spec: DeploymentSpec) -> pb.StartJobRequest:
        job = assignment.job
        return pb.StartJobRequest(
            job=job.SerializeToString(),
            url=assignment.url or spec.livekit_url,
            token=assignment.token,
            participant_identity=decisions.render(spec.identity_template, job, self.owner.name),
            participant_name=decisions.render(spec.name_template, job, self.owner.name)
            if spec.name_template
            else "",
            participant_metadata=spec.participant_metadata,
            participant_attributes={ATTRIBUTE_AGENT_NAME: spec.agent_name, **spec.participant_attributes},
            auto_subscribe=AUTO_SUBSCRIBE[spec.auto_subscribe],
        )

    async def termination(self, termination: agent.JobTermination) -> None:
        entry = self.jobs.get(termination.job_id)
        if entry is None or entry.pod is None:
            return
        fields = {**self.fields, "job_id": entry.job_id, "room": entry.room, "pod": str(entry.pod)}
        log.info("LiveKit terminated the job; shutting the runner down", extra=fields)
        grace = float(self.rt.grace_of(entry.pod) or 15)
        await self.rt.supervisor.shutdown_job(entry.pod.uid, "job terminated by LiveKit", grace)

    async def registered(self, worker_id: str) -> None:
        first = not self.worker_id and not self.connect_error
        self.worker_id = worker_id
        self.connect_error = ""
        metrics.WORKER_CONNECTED.labels(*self._labels).set(1)
        self._event(
            "WorkerRegistered", f"registered with LiveKit as worker {worker_id}" + ("" if first else " again")
        )
        self._dirty.set()

    async def disconnected(self, reason: str) -> None:
        self.worker_id = ""
        self.connect_error = reason
        metrics.WORKER_CONNECTED.labels(*self._labels).set(0)
        metrics.WORKER_RECONNECTS.labels(*self._labels).inc()
        self._dirty.set()

    def status(self) -> agent.UpdateWorkerStatus:
        return decisions.worker_status(self.capacity())

    def running_job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs.values() if j.pod is not None]

    # -- what the supervisor tells us -----------------------------------------------------------
    async def job_started(self, record: JobRecord) -> None:
        entry = self.jobs.get(record.job_id)
        if entry is not None:
            entry.started = True
        self.counts["jobsStarted"] += 1
        self._event(
            "JobStarted", f"job {record.job_id}: runner in pod {record.pod.name} joined room {record.room}"
        )
        self._dirty.set()

    async def job_adopted(self, record: JobRecord) -> None:
        self.pool.pods.pop(record.pod.uid, None)  # labelled idle, but its runner has a job
        entry = self.jobs.setdefault(
            record.job_id, ActiveJob(record.job_id, record.room, record.pod, adopted=True)
        )
        entry.started = True
        entry.pod = record.pod
        log.info("re-adopted a running job", extra=record.log_fields())
        self._event("JobAdopted", f"job {record.job_id} in pod {record.pod.name} re-attached and goes on")
        self._dirty.set()

    async def job_ended(self, record: JobRecord, outcome: JobOutcome) -> None:
        self.jobs.pop(record.job_id, None)
        self._remember(outcome.status)
        success = outcome.status is OutcomeStatus.SUCCESS
        self.counts["jobsSucceeded" if success else "jobsFailed"] += 1
        if self.worker is not None:
            status = agent.JS_SUCCESS if success else agent.JS_FAILED
            if not await self.worker.update_job(record.job_id, status, outcome.error):
                log.warning(
                    "could not report the job's end to LiveKit (not connected)", extra=record.log_fields()
                )
        detail = f"{outcome.reason}" + (f": {outcome.error}" if outcome.error else "")
        if outcome.status is OutcomeStatus.KILLED and "unresponsive" in outcome.reason:
            self._event(
                "RunnerUnresponsive",
                f"job {record.job_id}: {outcome.error}; pod {record.pod.name} deleted",
                warning=True,
            )
        else:
            self._event(
                "JobEnded", f"job {record.job_id} {outcome.status.value}: {detail}", warning=not success
            )
        # the runner exits by itself; removing the pod now means no pod outlives its job. A
        # killed runner's pod gets no grace: the supervisor deletes it with none, and a graceful
        # delete arriving first would let a hung process linger for the whole grace period
        killed = outcome.status is OutcomeStatus.KILLED
        self._spawn(self.rt.pods.delete(record.pod, grace_seconds=0 if killed else None))
        self._dirty.set()

    async def runner_gone(self, pod: PodIdentity) -> None:
        """The pod disappeared: a job that never reached the supervisor ends here."""
        self.pool.gone(pod.uid)
        self.trust.forget(pod)
        for entry in list(self.jobs.values()):
            if entry.pod == pod and self.rt.supervisor.job(pod.uid) is None:
                await self._fail_unstarted(entry, "the job's pod disappeared before its runner attached")

    async def _fail_unstarted(self, entry: ActiveJob, error: str) -> None:
        self.jobs.pop(entry.job_id, None)
        self.counts["jobsFailed"] += 1
        self._remember(OutcomeStatus.FAILED)
        metrics.JOBS_ENDED.labels(*self._labels, "rejected").inc()
        fields = {**self.fields, "job_id": entry.job_id, "room": entry.room, "pod": str(entry.pod or "")}
        log.warning("job failed before it started: %s", error, extra=fields)
        if self.worker is not None:
            await self.worker.update_job(entry.job_id, agent.JS_FAILED, error)
        self._event("JobFailed", f"job {entry.job_id}: {error}", warning=True)
        if entry.pod is not None:
            self._spawn(self.rt.pods.delete(entry.pod, grace_seconds=0))
        self._dirty.set()

    def _remember(self, status: OutcomeStatus) -> None:
        self.recent = [*self.recent[-9:], status]

    # -- restart: pods are the record ---------------------------------------------------------
    async def _adopt_existing_pods(self) -> None:
        try:
            pods = await self.rt.pods.list(self.owner.namespace, f"{LABEL_DEPLOYMENT}={self.owner.name}")
        except Exception as exc:
            log.warning("could not list existing pods: %s", _short(exc), extra=self.fields)
            return
        key = await self._adoption_key()
        for pod in pods:
            self.adopt(pod, key=key)
        if pods:
            log.info(
                "found %d existing pods; waiting for their runners to re-attach", len(pods), extra=self.fields
            )

    async def _adoption_key(self) -> bytes | None:
        """The pod-record key to check the pods found at start with (the worker's credentials
        are read only after them)."""
        if self.spec is None:
            return None
        try:
            credentials = await read_credentials(self.rt.api, self.owner.namespace, self.spec.credentials)
        except Exception as exc:
            log.warning(
                "cannot check the signatures of existing pods (LiveKit credentials unreadable: %s)",
                _short(exc),
                extra=self.fields,
            )
            return None
        return pod_trust.signing_key(credentials.api_secret)

    def adopt(self, pod: dict[str, Any], jobs_only: bool = False, key: bytes | None = None) -> bool:
        """Take up a pod found after a restart (or, ``jobs_only``, a job pod another operator
        created after this one listed them); False when the pod is not trusted (see
        ``pod_trust``). ``key``: the pod-record key, when not the current credentials'."""
        meta: dict[str, Any] = pod["metadata"]
        status: dict[str, Any] = pod.get("status") or {}
        identity = PodIdentity(meta["namespace"], meta["name"], meta["uid"])
        labels = meta.get("labels") or {}
        job_id = labels.get(LABEL_JOB_ID, "")
        verdict = self.trust.check(pod, key or self.trust.key)
        if verdict == "unverified":  # an idle pod, no key to check it with: replace it
            log.info(
                "replacing idle pod %s: no credentials to check its signature",
                identity.name,
                extra={**self.fields, "pod": str(identity)},
            )
            self._spawn(self.rt.pods.delete(identity))
        if verdict != "trusted":
            return False
        if jobs_only and not job_id:
            return True
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            self._spawn(self.rt.pods.delete(identity))
            return True
        heartbeat = self.spec.heartbeat if self.spec else self.rt.config.default_heartbeat
        self.rt.track_pod(identity, self)
        self.rt.supervisor.expect(RunnerBinding(identity, self.ref, heartbeat, job_id=job_id))
        if not job_id and labels.get(LABEL_STATE) == "idle":
            self.pool.adopt(identity, labels.get(LABEL_TEMPLATE, ""), meta.get("creationTimestamp"))
        elif job_id and job_id not in self.jobs:
            annotations = meta.get("annotations") or {}
            entry = ActiveJob(
                job_id,
                annotations.get(ANNOTATION_ROOM, ""),
                identity,
                started=True,
                adopted=True,
                start_request=resume.decode(annotations.get(ANNOTATION_START, "")),
            )
            self.jobs[job_id] = entry
            self._dirty.set()
            self._spawn(self._expect_reattach(job_id, identity, heartbeat.start_timeout + 30))
            if self.rt.supervisor.attached(identity.uid):  # attached before we got here
                self.runner_attached(identity, idle=self.rt.supervisor.job(identity.uid) is None)
        return True

    def runner_attached(self, pod: PodIdentity, idle: bool) -> None:
        """A runner attached; one without a job whose pod has one gets it now."""
        if not idle:
            return
        entry = next((j for j in self.jobs.values() if j.pod == pod), None)
        if entry is not None and entry.start_request is not None:
            kept, entry.start_request = entry.start_request, None  # sent once
            self._spawn(self._resume(entry, kept))

    async def _resume(self, entry: ActiveJob, kept: pb.StartJobRequest) -> None:
        """Send a job's start request, rebuilt from its pod, to a runner that never got it."""
        assert entry.pod is not None
        fields = {**self.fields, "job_id": entry.job_id, "room": entry.room, "pod": str(entry.pod)}
        if self.rt.supervisor.job(entry.pod.uid) is not None:
            return  # its runner has it after all
        spec = self.spec
        within = spec.heartbeat.start_timeout if spec else 30.0
        with contextlib.suppress(TimeoutError):  # read at start, right after the pods are listed
            await asyncio.wait_for(self._credentials_ready.wait(), within)
        credentials = self.credentials
        if spec is None or credentials is None:
            await self._fail_unstarted(
                entry, "its runner never got the job, and there are no LiveKit credentials to resume it with"
            )
            return
        key = pod_trust.signing_key(credentials.api_secret)
        why = "" if self.trust.verified(entry.pod) else await self.trust.recheck(self.rt.pods, entry.pod, key)
        if why:
            self.trust.distrust(entry.pod, why, entry.job_id)
            await self._fail_unstarted(entry, f"its pod is not trusted ({why}): not resumed")
            return
        # the credentials go to the spec's LiveKit only, never to a URL read from the pod
        if await self._room_gone(spec.livekit_url, credentials, entry.room, fields):
            await self._fail_unstarted(entry, "its room is gone: the call ended before the job was resumed")
            return
        token = resume.agent_token(
            kept, credentials.api_key, credentials.api_secret, spec.participant_permission()
        )
        request = resume.with_token(kept, token)
        request.url = spec.livekit_url
        try:
            await self.rt.supervisor.assign(entry.pod.uid, request, path="resumed")
        except StartFailed as exc:
            await self._fail_unstarted(entry, str(exc))
            return
        log.info("resumed the job: its runner had not got it from the previous operator", extra=fields)
        self._event(
            "JobResumed", f"job {entry.job_id}: pod {entry.pod.name} had not got its job; sent it again"
        )

    async def _room_gone(self, url: str, credentials: Credentials, room: str, fields: dict[str, str]) -> bool:
        try:
            return not await room_exists(url, credentials.api_key, credentials.api_secret, room)
        except Exception as exc:  # cannot tell: resume (an agent alone in a room times out)
            log.warning("could not ask LiveKit whether the room is there: %s", brief(exc), extra=fields)
            return False

    async def _expect_reattach(self, job_id: str, pod: PodIdentity, within: float) -> None:
        await asyncio.sleep(within)
        if self.rt.supervisor.job(pod.uid) is None and job_id in self.jobs:
            await self._fail_unstarted(self.jobs[job_id], f"runner did not re-attach within {within:.0f}s")

    # -- drain --------------------------------------------------------------------------------
    async def _drain(self) -> None:
        self.draining = True
        timeout = self.spec.drain_timeout if self.spec else 0.0
        self._event("Draining", f"deployment deleted: {len(self.jobs)} jobs may run for up to {timeout:.0f}s")
        if self.worker is not None:
            await self.worker.send_status()
        deadline = time.monotonic() + timeout
        while self.jobs and time.monotonic() < deadline:  # noqa: ASYNC110 - jobs end by several paths
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        for entry in list(self.jobs.values()):
            if entry.pod is not None:
                grace = float(self.rt.grace_of(entry.pod) or 15)
                await self.rt.supervisor.shutdown_job(entry.pod.uid, "deployment deleted", grace)
        for pod in await self.rt.pods.list(self.owner.namespace, f"{LABEL_DEPLOYMENT}={self.owner.name}"):
            meta: dict[str, Any] = pod["metadata"]  # type: ignore[assignment]
            await self.rt.pods.delete(PodIdentity(meta["namespace"], meta["name"], meta["uid"]))
        for _ in range(120):
            if not await self.rt.pods.list(self.owner.namespace, f"{LABEL_DEPLOYMENT}={self.owner.name}"):
                break
            await asyncio.sleep(0.5)
        self._event("Drained", "all job pods are gone")

    # -- status -------------------------------------------------------------------------------
    def conditions(self) -> list[Condition]:
        registered = bool(self.worker_id)
        if self.blocked:
            reg = Condition("Registered", False, self.blocked_reason, self.blocked)
        elif registered:
            reg = Condition("Registered", True, "WorkerRegistered", f"worker {self.worker_id}")
        elif self.connect_error:
            reg = Condition("Registered", False, "LiveKitUnreachable", self.connect_error)
        else:
            reg = Condition("Registered", False, "Connecting", "connecting to LiveKit")
        if self.draining:
            ready = Condition("Ready", False, "Draining", "the deployment is being deleted")
        elif registered and not self.blocked:
            ready = Condition("Ready", True, "Ready", "accepting jobs")
        else:
            ready = Condition("Ready", False, reg.reason, reg.message)
        failed = sum(1 for s in self.recent if s is not OutcomeStatus.SUCCESS)
        if len(self.recent) >= 3 and failed * 2 >= len(self.recent):
            degraded = Condition(
                "Degraded", True, "JobsFailing", f"{failed} of the last {len(self.recent)} jobs failed"
            )
        else:
            degraded = Condition("Degraded", False, "JobsHealthy", "")
        return [reg, ready, degraded]

    async def _status_loop(self) -> None:
        pause = STATUS_MIN_INTERVAL
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            fields = {
                "workerId": self.worker_id,
                "activeJobs": len(self.jobs),
                "idlePods": self.pool.ready,
                "busyPods": sum(1 for j in self.jobs.values() if j.pod is not None),
                **self.counts,
            }
            metrics.JOBS_ACTIVE.labels(*self._labels).set(len(self.jobs))
            max_jobs = self.spec.max_concurrent_jobs if self.spec else 0
            metrics.MAX_CONCURRENT_JOBS.labels(*self._labels).set(max_jobs)
            busy = sum(1 for j in self.jobs.values() if j.pod is not None)
            metrics.POOL_BUSY.labels(*self._labels).set(busy)
            try:
                await self.status_writer.write(self.generation, self.conditions(), fields)
                pause = STATUS_MIN_INTERVAL  # at most two status writes a second
            except Exception as exc:
                if pause in (STATUS_MIN_INTERVAL, STATUS_MAX_RETRY_INTERVAL):  # not twice a second
                    log.warning("could not write status: %s", _short(exc), extra=self.fields)
                self._dirty.set()
                pause = min(pause * 2, STATUS_MAX_RETRY_INTERVAL)
            await asyncio.sleep(pause)

    # -- helpers ------------------------------------------------------------------------------
    def _event(self, reason: str, message: str, warning: bool = False) -> None:
        self._spawn(self.rt.events.record(self.owner, reason, message, warning))

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 300 else text[:300] + "..."
