"""Failover: a running job whose pod dies is restarted on a new pod, the call kept.

When the supervisor ends a running job because its runner died (its container exited with
the job running, OOMKilled, a failing liveness probe, no pong within the ping timeout, the
stream lost for good, the pod deleted under it: ``JobOutcome.death``), and the deployment's
``failover`` allows it, the job is not reported to LiveKit: the dead pod is deleted, and the
same LiveKit job is placed again (a warm pool pod when there is one), in the same room, as the
same agent participant, with a fresh room token and the last checkpoint of its agent's state
(``Job.checkpoint``), so the agent carries on the conversation. LiveKit hears of the job only
when it really ends.

A job that ended by its own doing (the agent ended it, its entrypoint failed, the room
closed, LiveKit or the operator ended it) is never restarted, nor one that never started, nor
one of a draining deployment. ``failover.maxRestarts`` restarts within ``failover.window``:
the next death fails the job, with the reason.

A runner whose connection dropped with its job running (a killed process closes its socket at
once) and that does not re-attach within ``lost_after`` is judged dead by the supervisor
(death ``lost``) before the kubelet has seen the container end (about 2 s on a default
kubelet: its 1 s relist, then the status write). The job restarts at once; its dead pod is
left until the kubelet tells why it died (``pod_gone``), so the restart's Event and metric
name the real cause (``oom``, ``exited``), or removed after ``SETTLE_SECONDS`` when nothing
is told (a runner alive but cut off: its pod is deleted, and the new agent joining as the
same participant replaces it in the room).

The checkpoint and the restart count also survive the operator: each job's latest checkpoint
is kept on its pod, sealed (``checkpoint_keeper``, ``kube.pod_checkpoint``), and the restart
count rides in its pod's signed start request, so an operator that starts to find a job pod
whose runner died while none watched finishes the failover (``adoption``) through ``handle``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from agent_jobrunner.protocol import pb
from agent_operator import failover_record, metrics, resume
from agent_operator.checkpoint_keeper import CheckpointKeeper
from agent_operator.collaborators import Pods
from agent_operator.deployment_trust import DeploymentTrust
from agent_operator.jobs import Job, JobTable, Phase
from agent_operator.kube.pods import pod_outcome
from agent_operator.kube.secrets import Credentials
from agent_operator.placement import Placement
from agent_operator.spec import DeploymentSpec
from agent_operator.supervisor import JobOutcome
from agent_operator.supervisor.types import DEATH_LOST
from agent_operator.vocabulary import PodIdentity

log = logging.getLogger("agent_operator.deployment")

# a lost runner's pod the kubelet says nothing of within this long is deleted (its cause: lost)
SETTLE_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class Verdict:
    restart: bool
    note: str = ""  # why not, for the job's end (empty: nothing to add)
    why: str = ""  # the refusal's metric label


@dataclasses.dataclass(frozen=True)
class FailoverContext:
    fields: dict[str, str]
    labels: tuple[str, str]  # the metrics' (namespace, deployment)
    spec: Callable[[], DeploymentSpec | None]
    credentials: Callable[[], Credentials | None]
    draining: Callable[[], bool]
    pods: Pods
    placement: Placement
    jobs: JobTable
    trust: DeploymentTrust  # seals the checkpoints kept on the jobs' pods
    event: Callable[[str, str], None]  # an Event on the resource: (reason, message)
    clock: Callable[[], float] = time.monotonic


def lost_after(spec: DeploymentSpec | None) -> float | None:
    """How soon a dropped runner of the deployment is judged dead (its pods' ``RunnerBinding``):
    quickly when its job would be restarted, else after the supervisor's re-attach grace."""
    return spec.failover.lost_after if spec is not None and spec.failover.enabled else None


def verdict(
    entry: Job, outcome: JobOutcome, spec: DeploymentSpec | None, draining: bool, now: float
) -> Verdict:
    """Whether the job whose runner died is restarted (pure)."""
    if not outcome.death or entry.phase is not Phase.RUNNING:
        return Verdict(False)  # not a death, or it never started: it ends as it is
    if spec is None or not spec.failover.enabled:
        return Verdict(False)
    if draining:
        return Verdict(False, "not restarted: the deployment is draining", "draining")
    settings = spec.failover
    recent = [t for t in entry.restarts if now - t <= settings.window]
    if len(recent) >= settings.max_restarts:
        return Verdict(
            False,
            f"not restarted: {len(recent)} restarts within {settings.window:.0f}s already "
            f"(failover.maxRestarts {settings.max_restarts})",
            "budget",
        )
    return Verdict(True)


class Failover:
    def __init__(self, ctx: FailoverContext) -> None:
        self._ctx = ctx
        self.keeper = CheckpointKeeper(ctx.pods, ctx.trust.seal_checkpoint, self._pod_of, ctx.fields)
        self._settling: dict[str, tuple[Job, asyncio.Task[None]]] = {}  # by dead pod uid

    def _pod_of(self, job_id: str) -> PodIdentity | None:
        """The pod the job runs (or is starting) on."""
        entry = self._ctx.jobs.get(job_id)
        return entry.pod if entry is not None and entry.phase in (Phase.STARTING, Phase.RUNNING) else None

    def keep(self, pod: PodIdentity, checkpoint: pb.Checkpoint) -> None:
        """The job's latest checkpoint, taken from ``pod``'s runner: kept on the pod too."""
        self.keeper.keep(pod, checkpoint)

    async def close(self) -> None:
        settling = [task for _, task in self._settling.values()]
        self._settling.clear()
        for task in settling:
            task.cancel()
        await asyncio.gather(*settling, return_exceptions=True)
        await self.keeper.close()

    async def handle(self, entry: Job, outcome: JobOutcome) -> JobOutcome | None:
        """Restart the job if its death allows (None: restarting), else the outcome to end it
        with (the reason it was not restarted added)."""
        ctx = self._ctx
        spec, credentials = ctx.spec(), ctx.credentials()
        judged = verdict(entry, outcome, spec, ctx.draining(), ctx.clock())
        source = entry.request or entry.start_request
        if judged.restart and (source is None or credentials is None):
            judged = Verdict(
                False, "not restarted: its start request or the LiveKit credentials are unknown", "unknown"
            )
        if not judged.restart or spec is None or source is None or credentials is None:
            if outcome.death == DEATH_LOST and entry.pod is not None:  # its pod may be left
                await self._delete(entry.pod, entry.log_fields(ctx.fields))
            if judged.note:
                metrics.JOB_RESTARTS_REFUSED.labels(*ctx.labels, judged.why).inc()
                error = f"{outcome.error}; {judged.note}" if outcome.error else judged.note
                return dataclasses.replace(outcome, error=error)
            return outcome
        dead = entry.pod
        fields = entry.log_fields(ctx.fields)
        entry.restarts.append(ctx.clock())
        entry.death = f"{outcome.death}: {outcome.error}" if outcome.error else outcome.death
        log.warning(
            "the job's pod died (%s); restarting the job on a new pod (restart %d)",
            entry.death,
            len(entry.restarts),
            extra={**fields, "cause": outcome.death},
        )
        permission = spec.participant_permission()
        token = resume.agent_token(source, credentials.api_key, credentials.api_secret, permission)
        request = resume.restarted(source, token, spec.livekit_url, entry.checkpoint, len(entry.restarts))
        if outcome.death == DEATH_LOST and dead is not None:  # told why it died later
            self._settle_later(entry, dead)
        else:
            self._settled(entry, outcome.death)
            if dead is not None:  # a job counts one slot whichever of its pods lives
                await self._delete(dead, fields)
        ctx.placement.again(entry, request, spec)
        return None

    def pod_gone(self, pod: PodIdentity, final: dict[str, Any] | None) -> None:
        """A pod was deleted or finished: a lost runner's pod tells why it died."""
        found = self._settling.pop(pod.uid, None)
        if found is None:
            return
        entry, task = found
        task.cancel()
        cause = failover_record.died_of(final) if final else ""
        if cause:
            entry.death = f"{cause}: {pod_outcome(final or {})[1]}"
        self._settled(entry, cause or DEATH_LOST)

    def _settle_later(self, entry: Job, dead: PodIdentity) -> None:
        entry.settling = True
        self._settling[dead.uid] = (entry, asyncio.create_task(self._unsettled(entry, dead)))

    async def _unsettled(self, entry: Job, dead: PodIdentity) -> None:
        await asyncio.sleep(SETTLE_SECONDS)
        self._settling.pop(dead.uid, None)
        self._settled(entry, DEATH_LOST)
        await self._delete(dead, entry.log_fields(self._ctx.fields))

    def _settled(self, entry: Job, cause: str) -> None:
        """Why the job's pod died is known: the restart is counted, and told once started."""
        entry.settling = False
        metrics.JOB_RESTARTS.labels(*self._ctx.labels, cause).inc()
        if entry.untold:
            self._ctx.event("JobRestarted", f"{entry.untold} ({entry.death})")
            entry.untold = ""

    async def _delete(self, pod: PodIdentity, fields: dict[str, str]) -> None:
        try:
            await self._ctx.pods.delete(pod, grace_seconds=0)
        except Exception as exc:
            log.warning("could not delete the dead pod: %s", exc, extra=fields)
