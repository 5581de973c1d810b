"""What the supervisor reports about a runner or its job, routed to the deployment its
binding names (no uid -> owner map on the side: the binding says whose pod it is)."""

from __future__ import annotations

from collections.abc import Callable

from agent_jobrunner.protocol import pb
from agent_operator.deployment import DeploymentRuntime
from agent_operator.supervisor import JobOutcome, JobRecord, RunnerBinding


class DeploymentRouter:
    """The supervisor's listener: each call goes to the binding's deployment, if it runs here."""

    def __init__(self, deployment_of: Callable[[str, str], DeploymentRuntime | None]) -> None:
        self._deployment_of = deployment_of

    def _deployment(self, binding: RunnerBinding) -> DeploymentRuntime | None:
        return self._deployment_of(binding.deployment.namespace, binding.deployment.name)

    async def runner_attached(self, binding: RunnerBinding, idle: bool) -> None:
        owner = self._deployment(binding)
        if owner is not None:
            owner.runner_attached(binding.pod, idle)

    async def runner_detached(self, binding: RunnerBinding) -> None:
        owner = self._deployment(binding)
        if owner is not None:
            owner.runner_detached(binding.pod)

    async def runner_prewarm_failed(self, binding: RunnerBinding, error: str) -> None:
        owner = self._deployment(binding)
        if owner is not None:  # a job's pod: its job fails (the supervisor), else the pool's
            await owner.pool.failed(binding.pod.uid, "PrewarmFailed", error)

    async def job_started(self, job: JobRecord) -> None:
        owner = self._deployment(job.binding)
        if owner is not None:
            await owner.job_started(job)

    async def job_joined(self, job: JobRecord) -> None:
        owner = self._deployment(job.binding)
        if owner is not None and owner.jobs.joined(job.job_id, job.pod):
            owner.pool.wake()  # a refill held back for this join goes now
            owner.placement.joined()  # and the pool pods' busy labels

    async def job_adopted(self, job: JobRecord) -> None:
        owner = self._deployment(job.binding)
        if owner is not None:
            await owner.job_adopted(job)

    async def job_ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        owner = self._deployment(job.binding)
        if owner is not None:
            await owner.job_ended(job, outcome)

    async def job_checkpoint(self, job: JobRecord, checkpoint: pb.Checkpoint) -> None:
        owner = self._deployment(job.binding)
        if owner is not None:
            owner.job_checkpoint(job, checkpoint)
