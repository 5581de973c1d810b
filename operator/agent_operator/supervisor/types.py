"""The supervisor's vocabulary and the interfaces injected into it."""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol

from agent_jobrunner.protocol import pb

# the shared vocabulary, re-exported for the supervisor's users
from agent_operator.vocabulary import AuthError as AuthError
from agent_operator.vocabulary import AuthUnavailable as AuthUnavailable
from agent_operator.vocabulary import DeploymentRef as DeploymentRef
from agent_operator.vocabulary import HeartbeatSettings as HeartbeatSettings
from agent_operator.vocabulary import PodIdentity as PodIdentity


@dataclasses.dataclass(frozen=True)
class RunnerBinding:
    """What the operator knows of a pod whose runner may attach."""

    pod: PodIdentity
    deployment: DeploymentRef
    heartbeat: HeartbeatSettings
    # the job the pod's (signed) record names; a runner re-attaching with another is refused.
    # "": the pod's record names none (a pool pod), the runner's word is taken
    job_id: str = ""
    # a running job's runner whose connection dropped (not closed by it or by us) and that has
    # not re-attached within this many seconds is judged dead (its job ends, death "lost"),
    # its pod left for the kubelet to tell why; None: the supervisor's re-attach grace, then
    # its pod is deleted. The operator sets it for deployments with failover on.
    lost_after: float | None = None


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> PodIdentity:
        """The pod the credential was issued to; raises AuthError when it proves nothing."""
        ...


class Terminator(Protocol):
    async def terminate(self, pod: PodIdentity, reason: str) -> None:
        """Stop the unit the runner lives in (in a cluster: delete its pod at once)."""
        ...


class OutcomeStatus(enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    KILLED = "killed"


# how a job's runner died, when the job ended because of that rather than by the agent's own
# doing (it ended or failed the job, the room closed, the operator asked): the causes a
# failover restarts a job for, and the label of its restart metric
DEATH_EXITED = "exited"  # the runner's container ended with the job running (SIGKILL, a crash)
DEATH_OOM = "oom"  # OOMKilled
DEATH_PROBE = "probe"  # the kubelet stopped it for a failing liveness or startup probe
DEATH_UNRESPONSIVE = "unresponsive"  # no pong within the ping timeout (hung, SIGSTOP)
DEATH_LOST = "lost"  # its stream broke and it did not come back within the re-attach grace
DEATH_POD_DELETED = "pod_deleted"  # the pod was deleted under the job (eviction, node loss)


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    status: OutcomeStatus
    reason: str
    error: str = ""
    death: str = ""  # one of the DEATH_ causes, or "": the job ended by itself or was ended


class JobState(enum.Enum):
    ASSIGNED = "assigned"  # StartJobRequest waiting for the runner (or sent, unanswered)
    RUNNING = "running"
    ENDED = "ended"


@dataclasses.dataclass
class JobRecord:
    """One job on one pod, from assignment to outcome; outlives stream breaks."""

    job_id: str
    room: str
    binding: RunnerBinding
    assigned_at: float  # monotonic
    state: JobState = JobState.ASSIGNED
    started_at: float | None = None
    outcome: JobOutcome | None = None
    adopted: bool = False  # learned from a re-attaching runner, not assigned by us
    path: str = "cold"  # "warm" when the runner was attached and idle at assignment; "resumed"

    @property
    def pod(self) -> PodIdentity:
        return self.binding.pod

    @property
    def deployment(self) -> DeploymentRef:
        return self.binding.deployment

    def log_fields(self) -> dict[str, str]:
        return {
            "job_id": self.job_id,
            "room": self.room,
            "pod": str(self.pod),
            "deployment": str(self.deployment),
        }


class SupervisorListener(Protocol):
    """Receives what happens to runners and their jobs (the operator wires these to
    LiveKit, Kubernetes Events and status)."""

    async def runner_attached(self, binding: RunnerBinding, idle: bool) -> None: ...

    async def runner_detached(self, binding: RunnerBinding) -> None: ...

    async def runner_prewarm_failed(self, binding: RunnerBinding, error: str) -> None:
        """The runner attached, but its agent could not be loaded or prewarmed (``error``)."""
        ...

    async def job_started(self, job: JobRecord) -> None: ...

    async def job_joined(self, job: JobRecord) -> None:
        """The started job's runner says its room is joined (JOB_STATE_RUNNING)."""
        ...

    async def job_adopted(self, job: JobRecord) -> None: ...

    async def job_ended(self, job: JobRecord, outcome: JobOutcome) -> None: ...

    async def job_checkpoint(self, job: JobRecord, checkpoint: pb.Checkpoint) -> None:
        """The job's runner sent its agent's state (checked: its own job's, within the bound)."""
        ...


class NullListener:
    """A listener that ignores everything (the default)."""

    async def runner_attached(self, binding: RunnerBinding, idle: bool) -> None:
        return None

    async def runner_detached(self, binding: RunnerBinding) -> None:
        return None

    async def runner_prewarm_failed(self, binding: RunnerBinding, error: str) -> None:
        return None

    async def job_started(self, job: JobRecord) -> None:
        return None

    async def job_joined(self, job: JobRecord) -> None:
        return None

    async def job_adopted(self, job: JobRecord) -> None:
        return None

    async def job_ended(self, job: JobRecord, outcome: JobOutcome) -> None:
        return None

    async def job_checkpoint(self, job: JobRecord, checkpoint: pb.Checkpoint) -> None:
        return None


class NotServingRunners(Exception):
    """This operator takes no new runners now (it is handing over to the next one): not a
    refusal of the pod, the runner should try again (and reach the next operator)."""


class Resolver(Protocol):
    async def __call__(self, pod: PodIdentity) -> RunnerBinding | None:
        """The binding of an authenticated pod the supervisor was not told about (after an
        operator restart, say), or None when it is not a runner pod of this operator.
        Raises NotServingRunners while the operator takes no new runners."""
        ...
