"""After a restart (or a handover), pods are the record: a deployment takes up the pods it
finds, idle ones into its pool and job pods as its jobs, and resumes a job whose runner
never got it from the previous operator.

Which source wins: a runner that re-attaches and says what it runs wins over the pod's
labels (its job is taken as the job; a pool pod labelled idle whose runner has a job is not
the pool's: its busy label waits for the joins, ``placement``); a pod's labels and start
annotation stand for a job whose runner has not attached yet; a finished pod's phase and exit
code decide the outcome of a job whose runner never attached here.

A job pod found finished because its runner died while no operator watched (OOMKilled, killed
by a signal, evicted: ``failover_record.died_of``) is a failover the previous operator did not
get to: if failover allows (``spec.failover``, the budget counted from the restarts the pod
keeps), the job is restarted through the same ``Failover`` path as a live death, with the
checkpoint its pod keeps (``kube.pod_checkpoint``), and LiveKit hears nothing; else it fails
as before, with the reason. Only a trusted pod is restarted from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent_jobrunner.protocol import pb
from agent_operator import failover_record, resume
from agent_operator.collaborators import Collaborators
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.job_ends import JobEnds
from agent_operator.jobs import Job, JobTable, Phase
from agent_operator.kube import pod_trust
from agent_operator.kube.pods import brief, pod_outcome
from agent_operator.kube.podspec import (
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_DEPLOYMENT,
    LABEL_JOB_ID,
    LABEL_STATE,
    LABEL_TEMPLATE,
    Owner,
)
from agent_operator.kube.secrets import Credentials
from agent_operator.registration import short
from agent_operator.spec import DeploymentSpec
from agent_operator.supervisor import JobOutcome, OutcomeStatus
from agent_operator.supervisor.service import StartFailed
from agent_operator.vocabulary import HeartbeatSettings, PodIdentity
from agent_operator.warm_pool import WarmPool
from agent_operator.worker.rooms import room_exists

log = logging.getLogger("agent_operator.deployment")


@dataclasses.dataclass(frozen=True)
class AdoptionContext:
    """What adoption works with, from its deployment."""

    owner: Owner
    fields: dict[str, str]
    jobs: JobTable
    pool: WarmPool
    ends: JobEnds
    spec: Callable[[], DeploymentSpec | None]
    heartbeat: Callable[[], HeartbeatSettings]
    expect: Callable[[PodIdentity, HeartbeatSettings, str], None]  # (pod, heartbeat, job id)
    credentials: Callable[[], Credentials | None]
    credentials_ready: asyncio.Event
    changed: Callable[[], None]
    spawn: Callable[[Awaitable[Any]], None]
    event: Callable[..., None]
    trust: DeploymentTrust  # signs what the deployment makes, checks what it finds (pod_trust)
    # failover of a job whose runner died unwatched (``Failover.handle``: None when restarting)
    restart: Callable[[Job, JobOutcome], Awaitable[JobOutcome | None]]


class Adoption:
    def __init__(self, ctx: AdoptionContext, services: Collaborators) -> None:
        self._ctx = ctx
        self._supervisor = services.supervisor
        self._pods = services.pods
        self._read_credentials = services.read_credentials
        self._unwatched: set[str] = set()  # pods whose unwatched end is being dealt with

    async def adopt_existing_pods(self) -> None:
        dep = self._ctx
        try:
            pods = await self._pods.list(dep.owner.namespace, f"{LABEL_DEPLOYMENT}={dep.owner.name}")
        except Exception as exc:
            log.warning("could not list existing pods: %s", short(exc), extra=dep.fields)
            return
        credentials = await self._adoption_credentials()
        key = pod_trust.signing_key(credentials.api_secret) if credentials else None
        for pod in failover_record.listing_order(pods):
            self.adopt(pod, key=key, credentials=credentials)
        if pods:
            log.info(
                "found %d existing pods; waiting for their runners to re-attach", len(pods), extra=dep.fields
            )

    async def _adoption_credentials(self) -> Credentials | None:
        """The credentials to check the pods found at start with, and open their checkpoints
        (the worker's are read only after them)."""
        dep = self._ctx
        spec = dep.spec()
        if spec is None:
            return None
        try:
            credentials = await self._read_credentials(dep.owner.namespace, spec.credentials)
        except Exception as exc:
            log.warning(
                "cannot check the signatures of existing pods (LiveKit credentials unreadable: %s)",
                short(exc),
                extra=dep.fields,
            )
            return None
        return credentials

    def adopt(
        self,
        pod: dict[str, Any],
        jobs_only: bool = False,
        key: bytes | None = None,
        credentials: Credentials | None = None,
    ) -> bool:
        """Take up a pod found after a restart (or, ``jobs_only``, a job pod another operator
        created after this one listed them); False when the pod is not trusted (see
        ``kube.pod_trust``). ``key``: the pod-record key, and ``credentials`` (to open its
        checkpoint with), when not the current credentials'."""
        dep = self._ctx
        meta: dict[str, Any] = pod["metadata"]
        status: dict[str, Any] = pod.get("status") or {}
        identity = PodIdentity(meta["namespace"], meta["name"], meta["uid"])
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        job_id = labels.get(LABEL_JOB_ID, "")
        key = key or dep.trust.key
        if jobs_only and key is None:
            # its runner attached before the credentials were read: it retries, and the pods'
            # listing judges the pod (a job pod taken now, to be checked later, would have its
            # "job" failed and the pod deleted if the check failed: a rewritten pod is left alone)
            return False
        verdict = dep.trust.check(pod, key)
        if verdict == "unverified":  # an idle pod, no key to check it with: replace it
            log.info(
                "replacing idle pod %s: no credentials to check its signature",
                identity.name,
                extra={**dep.fields, "pod": str(identity)},
            )
            dep.spawn(self._pods.delete(identity))
        if verdict != "trusted":
            return False
        if jobs_only and not job_id:
            return True
        finished = status.get("phase") in ("Succeeded", "Failed")
        known = job_id in dep.jobs
        entry = None
        if job_id and not known:
            room = annotations.get(ANNOTATION_ROOM, "")
            entry = Job(job_id, room, Phase.RUNNING, pod=identity, adopted=True)
            self._restore(entry, pod, credentials)
        if meta.get("deletionTimestamp") or finished:
            if entry is not None and finished:
                # it ended while no operator watched: LiveKit hears how, by its exit code
                dep.spawn(self._ended_unwatched(dep.jobs.adopt(entry), identity, pod))
            elif not (known and finished and (held := dep.jobs.get(job_id)) and held.pod == identity):
                dep.spawn(self._pods.delete(identity))  # else its job's end (or failover) is under way
            return True
        heartbeat = dep.heartbeat()
        dep.expect(identity, heartbeat, job_id)
        if not job_id and labels.get(LABEL_STATE) == "idle":
            if self._supervisor.job(identity.uid) is None:  # else it re-attached with a job first
                dep.pool.adopt(identity, labels.get(LABEL_TEMPLATE, ""), meta.get("creationTimestamp"))
                if self._supervisor.attached(identity.uid):  # attached (idle) before we got here
                    dep.pool.attached(identity.uid)
        elif entry is not None:
            dep.jobs.adopt(entry)
            dep.changed()
            dep.spawn(self._expect_reattach(entry, heartbeat.start_timeout + 30))
            if self._supervisor.attached(identity.uid):  # attached before we got here
                self.runner_attached(identity, idle=self._supervisor.job(identity.uid) is None)
        return True

    def _restore(self, entry: Job, pod: dict[str, Any], credentials: Credentials | None) -> None:
        """What the job's pod keeps of it: its start request (token-less), the restarts before
        this pod (the failover budget) and its latest checkpoint (None when it cannot be opened
        yet, or is not genuine)."""
        meta = pod["metadata"]
        entry.start_request = resume.decode((meta.get("annotations") or {}).get(ANNOTATION_START, ""))
        if entry.start_request is not None:
            count = entry.start_request.restarts
            entry.restarts = failover_record.restart_times(
                count, meta.get("creationTimestamp"), time.monotonic(), time.time()
            )
            entry.death = "an earlier pod of the job died" if count else ""
        entry.checkpoint = self._ctx.trust.open_checkpoint(pod, entry.job_id, credentials)

    async def pod_gone(self, pod: PodIdentity, final: dict[str, Any] | None) -> None:
        """A job whose pod is gone or finished and whose runner never attached here (the
        supervisor does not hold it) ends by the pod's own last word."""
        entry = self._ctx.jobs.on_pod(pod.uid)
        if entry is None or entry.phase is Phase.PLACING:
            return
        record = self._supervisor.job(pod.uid)
        if record is not None and record.job_id == entry.job_id:
            return  # the supervisor holds its outcome (it ends the job when it forgets the pod)
        await self._ended_unwatched(entry, pod, final or {})

    async def _ended_unwatched(self, entry: Job, identity: PodIdentity, pod: dict[str, Any]) -> None:
        """Exit 0 is a success: its runner ended the job while attached to the previous
        operator, or while none ran. A runner that died with the job: restarted if failover
        allows (see the module's docstring). Once per pod (the listing and the pod watch both
        tell of it; a job restarted meanwhile is on another pod)."""
        uid = identity.uid
        if uid in self._unwatched or entry.pod != identity:
            return
        self._unwatched.add(uid)
        try:
            await self._end_unwatched(entry, pod)
        finally:
            self._unwatched.discard(uid)

    async def _end_unwatched(self, entry: Job, pod: dict[str, Any]) -> None:
        succeeded, detail = pod_outcome(pod)
        if succeeded:
            await self._ctx.ends.finish(entry, JobOutcome(OutcomeStatus.SUCCESS, "runner exited 0", detail))
            return
        cause = failover_record.died_of(pod)
        if cause:
            outcome = JobOutcome(OutcomeStatus.FAILED, "runner died unwatched", detail, death=cause)
            ending = await self._restart_unwatched(entry, pod, outcome)
            if ending is None:
                return  # restarting on a new pod
            detail = ending.error
        await self._ctx.ends.fail_unstarted(
            entry, f"the job's pod ended unwatched by this operator ({detail})"
        )

    async def _restart_unwatched(
        self, entry: Job, pod: dict[str, Any], outcome: JobOutcome
    ) -> JobOutcome | None:
        """Finish the failover of a job whose runner died while no operator watched (None:
        restarting), once the credentials are read, its pod checked (a pod not trusted is never
        restarted from) and its room still there."""
        dep = self._ctx
        assert entry.pod is not None
        spec = dep.spec()
        if spec is None or not spec.failover.enabled:
            return outcome
        if dep.credentials() is None:  # read at start, right after the pods are listed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dep.credentials_ready.wait(), spec.heartbeat.start_timeout)
        credentials = dep.credentials()
        if credentials is None:
            return await dep.restart(entry, outcome)  # says why it is not restarted
        if not dep.trust.verified(entry.pod):
            key = pod_trust.signing_key(credentials.api_secret)
            why = await dep.trust.recheck(self._pods, entry.pod, key)
            if why:
                dep.trust.distrust(entry.pod, why, entry.job_id)
                return dataclasses.replace(outcome, error=f"{outcome.error}; its pod is not trusted ({why})")
        if entry.checkpoint is None:
            entry.checkpoint = dep.trust.open_checkpoint(pod, entry.job_id)
        if await self._room_gone(spec.livekit_url, credentials, entry.room, entry.log_fields(dep.fields)):
            return dataclasses.replace(outcome, error=f"{outcome.error}; not restarted: its room is gone")
        return await dep.restart(entry, outcome)

    def runner_attached(self, pod: PodIdentity, idle: bool) -> None:
        """A runner attached; one without a job whose pod has one gets it now."""
        if not idle:
            return
        entry = self._ctx.jobs.on_pod(pod.uid)
        if entry is not None and entry.start_request is not None:
            kept, entry.start_request = entry.start_request, None  # sent once
            self._ctx.spawn(self._resume(entry, kept))

    async def _resume(self, entry: Job, kept: pb.StartJobRequest) -> None:
        """Send a job's start request, rebuilt from its pod, to a runner that never got it."""
        dep = self._ctx
        assert entry.pod is not None
        fields = entry.log_fields(dep.fields)
        if self._supervisor.job(entry.pod.uid) is not None:
            return  # its runner has it after all
        spec = dep.spec()
        within = spec.heartbeat.start_timeout if spec else 30.0
        with contextlib.suppress(TimeoutError):  # read at start, right after the pods are listed
            await asyncio.wait_for(dep.credentials_ready.wait(), within)
        credentials = dep.credentials()
        if spec is None or credentials is None:
            await dep.ends.fail_unstarted(
                entry, "its runner never got the job, and there are no LiveKit credentials to resume it with"
            )
            return
        key = pod_trust.signing_key(credentials.api_secret)
        why = "" if dep.trust.verified(entry.pod) else await dep.trust.recheck(self._pods, entry.pod, key)
        if why:
            dep.trust.distrust(entry.pod, why, entry.job_id)
            await dep.ends.fail_unstarted(entry, f"its pod is not trusted ({why}): not resumed")
            return
        # the credentials go to the spec's LiveKit only, never to a URL read from the pod
        if await self._room_gone(spec.livekit_url, credentials, entry.room, fields):
            await dep.ends.fail_unstarted(
                entry, "its room is gone: the call ended before the job was resumed"
            )
            return
        token = resume.agent_token(
            kept, credentials.api_key, credentials.api_secret, spec.participant_permission()
        )
        request = resume.with_token(kept, token)
        request.url = spec.livekit_url
        if entry.checkpoint is not None:  # a restarted job's pod: it starts from its checkpoint
            request.restored_state = entry.checkpoint.state
            request.restored_seq = entry.checkpoint.seq
        entry.request = request
        try:
            await self._supervisor.assign(entry.pod.uid, request, path="resumed")
        except StartFailed as exc:
            await dep.ends.fail_unstarted(entry, str(exc))
            return
        log.info("resumed the job: its runner had not got it from the previous operator", extra=fields)
        dep.event(
            "JobResumed", f"job {entry.job_id}: pod {entry.pod.name} had not got its job; sent it again"
        )

    async def _room_gone(self, url: str, credentials: Credentials, room: str, fields: dict[str, str]) -> bool:
        try:
            return not await room_exists(url, credentials.api_key, credentials.api_secret, room)
        except Exception as exc:  # cannot tell: resume (an agent alone in a room times out)
            log.warning("could not ask LiveKit whether the room is there: %s", brief(exc), extra=fields)
            return False

    async def _expect_reattach(self, entry: Job, within: float) -> None:
        await asyncio.sleep(within)
        assert entry.pod is not None
        if self._supervisor.job(entry.pod.uid) is None:
            await self._ctx.ends.fail_unstarted(entry, f"runner did not re-attach within {within:.0f}s")
