"""The one exit of a deployment's jobs: the outcome reported to LiveKit once, counted,
told as an Event, the pod removed, and only then the slot freed (a pod whose delete failed
is still live: its job keeps the slot until the pod is seen gone)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from livekit.protocol import agent

from agent_operator import metrics
from agent_operator.collaborators import Pods
from agent_operator.jobs import Job, JobTable
from agent_operator.registration import short
from agent_operator.supervisor import JobOutcome, JobRecord, OutcomeStatus

log = logging.getLogger("agent_operator.deployment")


class JobReporter(Protocol):
    async def update_job(self, job_id: str, status: agent.JobStatus, error: str = "") -> bool: ...


class JobEnds:
    def __init__(
        self,
        jobs: JobTable,
        pods: Pods,
        reporter: Callable[[], JobReporter | None],
        event: Callable[..., None],
        freed: Callable[[], None],
        fields: dict[str, str],
        labels: tuple[str, str],
    ) -> None:
        self._jobs = jobs
        self._pods = pods
        self._reporter = reporter  # the worker connection of the moment (it may be replaced)
        self._event = event
        self._freed = freed
        self._fields = fields
        self._labels = labels  # the metrics' namespace and deployment
        self.counts = {"jobsStarted": 0, "jobsSucceeded": 0, "jobsFailed": 0}
        self.recent: list[OutcomeStatus] = []  # the last ten outcomes (the Degraded condition)
        self._undeleted: dict[str, Job] = {}  # by pod uid: ended jobs whose pod's delete failed

    def carry(self, status: Mapping[str, Any]) -> None:
        """Count on from the resource's status: after a deploy or a restart the status columns
        go on from what the last operator wrote (ends it had not written yet are not in it)."""
        for key in self.counts:
            try:
                self.counts[key] = max(self.counts[key], int(status.get(key) or 0))
            except (TypeError, ValueError):
                continue  # not a count (edited by hand): start from what this operator has

    def started(self, record: JobRecord, entry: Job | None) -> None:
        """Its runner started the job: counted, and told as an Event (a job restarted on a new
        pod by a failover is not counted again: it is the same job)."""
        if entry is not None and entry.restarts:
            after = time.monotonic() - entry.restarts[-1]
            told = f"job {record.job_id} restarted on pod {record.pod.name} after {after:.1f}s"
            if entry.settling:  # told once it is known why its last pod died (failover)
                entry.untold = told
            else:
                self._event("JobRestarted", f"{told} ({entry.death})")
            return
        self.counts["jobsStarted"] += 1
        joined = f"runner in pod {record.pod.name} joined room {record.room}"
        self._event("JobStarted", f"job {record.job_id}: {joined}")

    async def fail_unstarted(self, entry: Job, error: str) -> None:
        """A job that ends without an outcome from its runner."""
        await self.finish(entry, JobOutcome(OutcomeStatus.FAILED, "did not start", error), unstarted=True)

    async def finish(self, entry: Job, outcome: JobOutcome, unstarted: bool = False) -> None:
        """Report, count and clean up once; any later call for the same job does nothing."""
        if not self._jobs.finish(entry):
            return
        fields = entry.log_fields(self._fields)
        self.recent = [*self.recent[-9:], outcome.status]
        success = outcome.status is OutcomeStatus.SUCCESS
        self.counts["jobsSucceeded" if success else "jobsFailed"] += 1
        reporter = self._reporter()
        status = agent.JS_SUCCESS if success else agent.JS_FAILED
        if reporter is None or not await reporter.update_job(entry.job_id, status, outcome.error):
            log.warning("could not report the job's end to LiveKit (not connected)", extra=fields)
        if unstarted:
            metrics.JOBS_ENDED.labels(*self._labels, "rejected").inc()
            log.warning("job failed before it started: %s", outcome.error, extra=fields)
            self._event("JobFailed", f"job {entry.job_id}: {outcome.error}", warning=True)
        elif outcome.status is OutcomeStatus.KILLED and "unresponsive" in outcome.reason:
            pod = entry.pod.name if entry.pod else ""
            self._event(
                "RunnerUnresponsive", f"job {entry.job_id}: {outcome.error}; pod {pod} deleted", warning=True
            )
        else:
            detail = outcome.reason + (f": {outcome.error}" if outcome.error else "")
            self._event(
                "JobEnded", f"job {entry.job_id} {outcome.status.value}: {detail}", warning=not success
            )
        # the runner exits by itself; removing the pod now means no pod outlives its job. A
        # killed runner's pod (and one that never started its job) gets no grace: a graceful
        # delete would let a hung process linger for the whole grace period. The slot is
        # freed once the delete returned, so idle + busy pods never exceed the cap
        if entry.pod is not None:
            no_grace = unstarted or outcome.status is OutcomeStatus.KILLED
            try:
                await self._pods.delete(entry.pod, grace_seconds=0 if no_grace else None)
            except Exception as exc:
                log.warning(
                    "could not delete the job's pod: %s; its slot is freed once the pod is gone",
                    short(exc),
                    extra=fields,
                )
                self._undeleted[entry.pod.uid] = entry
                return
        self._jobs.release(entry)
        self._freed()

    def pod_gone(self, uid: str) -> None:
        """A pod was deleted (or its delete returned): an ended job's slot it still held is free."""
        entry = self._undeleted.pop(uid, None)
        if entry is not None:
            self._jobs.release(entry)
            self._freed()
