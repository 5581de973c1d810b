"""One deployment's assigned jobs on their way to a runner: a pod (a warm one, else a new one),
the start request sent to its runner, and LiveKit's termination of a job, even one still
being placed.

A placement runs as the deployment's own task (``tasks``), not the worker connection's, so
replacing the connection (a re-registration) never cuts it off half way; at a stop the
placements in flight finish first, so a job LiveKit gave us gets its pod and its signed job
label, from which the next operator resumes it.

A pool pod's busy label (and the JobAssigned Event) waits until its job, and every other job
of the deployment still starting, has joined its room, for at most ``BUSY_LABEL_WITHIN_SECONDS``
after the assignment: the patch (the API server, etcd, the kubelet's and this operator's pod
watches) takes the CPU the calls join with. Until it lands, a restarted operator finds the pod
labelled idle, and the runner's own word (it re-attaches with its job) is the record
(``adoption``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from livekit.protocol import agent

from agent_jobrunner.protocol import pb
from agent_operator import metrics
from agent_operator.collaborators import Collaborators
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.job_ends import JobEnds
from agent_operator.jobs import Job, JobTable, Phase
from agent_operator.kube.podspec import JobInfo
from agent_operator.offers import job_info, participant, start_request
from agent_operator.registration import short
from agent_operator.spec import DeploymentSpec
from agent_operator.supervisor.service import StartFailed
from agent_operator.tasks import BackgroundTasks
from agent_operator.vocabulary import HeartbeatSettings, PodIdentity
from agent_operator.warm_pool import WarmPool

log = logging.getLogger("agent_operator.deployment")

# at a stop, placements in flight finish first (see the module's docstring)
PLACEMENT_SETTLE_SECONDS = 10.0
# a JobTermination this soon after a job's failover began is LiveKit's answer to the death of its
# agent (the old participant removed: AGENT_LEFT_ROOM), and is not applied to the restarted job
FAILOVER_TERMINATION_WINDOW = 30.0
# the longest a pool pod's busy label waits for its job to join the room (see the docstring)
BUSY_LABEL_WITHIN_SECONDS = 1.5


@dataclasses.dataclass(frozen=True)
class PlacementContext:
    """What placement works with, from its deployment."""

    name: str  # the deployment's name, for participant identities
    fields: dict[str, str]
    labels: tuple[str, str]  # the metrics' (namespace, deployment)
    jobs: JobTable
    pool: WarmPool
    ends: JobEnds
    trust: DeploymentTrust
    expect: Callable[[PodIdentity, HeartbeatSettings, str], None]  # (pod, heartbeat, job id)
    event: Callable[..., None]
    changed: Callable[[], None]


class Placement:
    def __init__(self, ctx: PlacementContext, services: Collaborators) -> None:
        self._ctx = ctx
        self._services = services
        self._tasks = BackgroundTasks(log, "placement", ctx.fields)
        self._a_join = asyncio.Event()  # set (and replaced) at each join: the labels waiting look

    def assign(self, assignment: agent.JobAssignment, spec: DeploymentSpec) -> None:
        """Take an assigned job (its offer's record, if it still holds, becomes its record) and
        place it."""
        dep = self._ctx
        job = assignment.job
        fields = {**dep.fields, "job_id": job.id, "room": job.room.name}
        entry = dep.jobs.place(job.id, job.room.name)
        if not entry.identity:  # no offer of ours on record (the offer's hold ran out)
            entry.identity, entry.name = participant(spec, job, dep.name)
        metrics.JOBS_ASSIGNED.labels(*dep.labels).inc()
        dep.changed()
        request = start_request(assignment, spec, entry.identity, entry.name)
        self._tasks.spawn(self._place(entry, request, spec, fields))

    def again(self, entry: Job, request: pb.StartJobRequest, spec: DeploymentSpec) -> None:
        """Place a job once more, on a new pod (failover: its pod died)."""
        entry.phase, entry.pod = Phase.PLACING, None
        fields = {**self._ctx.fields, "job_id": entry.job_id, "room": entry.room}
        self._tasks.spawn(self._place(entry, request, spec, fields))

    async def _place(
        self, entry: Job, request: pb.StartJobRequest, spec: DeploymentSpec, fields: dict[str, str]
    ) -> None:
        dep = self._ctx
        info = job_info(request, fields)
        if request.restored_state:  # restarted: the new pod keeps the checkpoint from the start
            kept = pb.Checkpoint(job_id=entry.job_id, seq=request.restored_seq, state=request.restored_state)
            info = dataclasses.replace(info, checkpoint=dep.trust.seal_checkpoint(kept))
        entry.request = request

        def hold(pod: PodIdentity) -> None:
            entry.pod = pod

        try:
            placement, pooled = await dep.pool.place(spec, info, fields, hold)
        except Exception as exc:
            await dep.ends.fail_unstarted(entry, f"could not create the job's pod: {short(exc)}")
            return
        pod = placement.pod
        entry.phase = Phase.STARTING
        fields = entry.log_fields(dep.fields)
        metrics.JOB_STARTS_BY_PATH.labels(*dep.labels, placement.path).inc()
        if pooled:
            log.info("job assigned to a pool pod (%s)", placement.path, extra=fields)
            signature = dep.trust.busy_signature(pod, spec.template_hash(), info)
            self._tasks.spawn(self._mark_busy_once_joined(entry, pod, info, signature))
        else:
            log.info("job assigned; pod created (cold path)", extra=fields)
            dep.event("JobAssigned", f"job {entry.job_id} in room {entry.room}: pod {pod.name} created")
            dep.expect(pod, spec.heartbeat, entry.job_id)
        try:
            await self._services.supervisor.assign(pod.uid, request)
        except StartFailed as exc:
            await dep.ends.fail_unstarted(entry, str(exc))
            return
        if entry.terminate_requested:  # LiveKit ended it while it was being placed
            await self.shut_down(entry, "job terminated by LiveKit")

    def joined(self) -> None:
        """A job of the deployment joined its room (``JobTable.joined``): the pool pods' labels
        waiting for it look again."""
        self._a_join.set()
        self._a_join = asyncio.Event()

    async def _mark_busy_once_joined(
        self, entry: Job, pod: PodIdentity, info: JobInfo, signature: str
    ) -> None:
        """Label the pool pod busy once its job and the deployment's other starting ones joined
        their rooms, or ``BUSY_LABEL_WITHIN_SECONDS`` on; not a pod the job left (its runner
        died: a failover) or one whose job is over."""
        dep = self._ctx
        deadline = time.monotonic() + BUSY_LABEL_WITHIN_SECONDS
        while entry.joined_on != pod or dep.jobs.starting:
            left = deadline - time.monotonic()
            if left <= 0 or entry.pod != pod or entry.phase in (Phase.ENDING, Phase.ENDED):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._a_join.wait(), left)
        dep.event("JobAssigned", f"job {entry.job_id} in room {entry.room}: pool pod {pod.name}")
        if entry.pod == pod and entry.phase not in (Phase.ENDING, Phase.ENDED):
            await self._services.pods.mark_busy(pod, info, signature)

    async def termination(self, termination: agent.JobTermination) -> None:
        dep = self._ctx
        entry = dep.jobs.get(termination.job_id)
        if entry is None:
            return
        if entry.restarts and time.monotonic() - entry.restarts[-1] < FAILOVER_TERMINATION_WINDOW:
            # livekit-server ends a job whose agent participant left the room (AGENT_LEFT_ROOM:
            # its pod died) unless a newer session of that identity replaced it first: the
            # restart of this very job is the answer, not a reason to end it
            log.warning(
                "LiveKit ended the job as its agent left the room (its pod died); it goes on, restarted",
                extra=entry.log_fields(dep.fields),
            )
            return
        if entry.phase is Phase.OFFERED:
            dep.jobs.release(entry)  # never assigned: nothing runs
            return
        if entry.pod is None or entry.phase is Phase.PLACING:
            log.info(
                "LiveKit terminated the job while it is placed; ending it then",
                extra=entry.log_fields(dep.fields),
            )
            entry.terminate_requested = True
            return
        await self.shut_down(entry, "job terminated by LiveKit")

    async def shut_down(self, entry: Job, reason: str) -> None:
        assert entry.pod is not None
        log.info("%s; shutting the runner down", reason, extra=entry.log_fields(self._ctx.fields))
        grace = float(self._services.grace_of(entry.pod) or 15)
        await self._services.supervisor.shutdown_job(entry.pod.uid, reason, grace)

    async def close(self) -> None:
        """The placements in flight finish (for a while), then what is left is cancelled."""
        await self._tasks.settle(PLACEMENT_SETTLE_SECONDS)
        await self._tasks.close()
