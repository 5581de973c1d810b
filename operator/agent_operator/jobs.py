"""A deployment's jobs on the operator side: one record per job, from offer to end.

Each job lives in one ``Job`` through its whole life: offered (LiveKit asked, we said yes),
placing (a pod is being found or made), starting (its runner has the StartJobRequest),
running (its runner started it; ``joined_on`` once it says the room is joined), ending
(its outcome is decided and being reported) and ended. ``JobTable.finish``
is the one guarded exit: whoever gets True from it reports the outcome, and nobody else
can, so a job is reported once. Capacity, the pool's demand and the status are derived
from the table; nothing keeps a second copy.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Iterator

from agent_jobrunner.protocol import pb
from agent_operator.vocabulary import PodIdentity


class Phase(enum.Enum):
    OFFERED = "offered"
    PLACING = "placing"
    STARTING = "starting"
    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"


# the phases in which a job holds (or is getting) a pod of its own
HOLDS_POD = (Phase.PLACING, Phase.STARTING, Phase.RUNNING, Phase.ENDING)


@dataclasses.dataclass
class Job:
    job_id: str
    room: str
    phase: Phase
    # the participant, rendered once when the offer was accepted and carried to assignment
    identity: str = ""
    name: str = ""
    offered_until: float = 0.0  # an offer whose assignment never came frees its slot then
    pod: PodIdentity | None = None
    # the pod whose runner said the job's room is joined (JOB_STATE_RUNNING): a livekit-agents
    # entrypoint joins in ctx.connect(), after its runner answered; a new pod is not it
    joined_on: PodIdentity | None = None
    adopted: bool = False  # found on a pod after a restart
    # adopted: the start request its pod keeps (token-less), for a runner that attaches
    # without the job; taken (None) once it is being sent
    start_request: pb.StartJobRequest | None = None
    # LiveKit asked to end the job while it was still being placed: done once it is placed
    terminate_requested: bool = False
    # the StartJobRequest its runner was last sent (with its token: in memory only); a
    # failover builds the next pod's from it
    request: pb.StartJobRequest | None = None
    # the latest checkpoint of its agent's state its runner sent (failover hands it on)
    checkpoint: pb.Checkpoint | None = None
    # failover: when (monotonic) it was restarted on a new pod, and why its last pod died
    restarts: list[float] = dataclasses.field(default_factory=list)
    death: str = ""
    # why its last pod died is not known yet (a lost runner: ``Failover.pod_gone``), and the
    # JobRestarted Event's text kept until it is
    settling: bool = False
    untold: str = ""

    def log_fields(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "job_id": self.job_id, "room": self.room, "pod": str(self.pod or "")}


class JobTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs: dict[str, Job] = {}
        self._clock = clock

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def on_pod(self, uid: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.pod is not None and j.pod.uid == uid), None)

    # -- the life of a job --------------------------------------------------------------------
    def offer(self, job_id: str, room: str, identity: str, name: str, hold: float) -> Job:
        job = Job(job_id, room, Phase.OFFERED, identity, name, offered_until=self._clock() + hold)
        self._jobs[job_id] = job
        return job

    def place(self, job_id: str, room: str) -> Job:
        """The assignment came: the job holds a slot until it ends. An assignment without our
        offer (lost after a reconnect) is placed as well, its participant rendered then."""
        job = self._jobs.get(job_id)
        if job is None or job.phase is not Phase.OFFERED:
            job = Job(job_id, room, Phase.PLACING)
            self._jobs[job_id] = job
        job.phase = Phase.PLACING
        return job

    def adopt(self, job: Job) -> Job:
        self._jobs[job.job_id] = job
        return job

    def finish(self, job: Job) -> bool:
        """The one exit: True for the first caller (who reports the outcome), then False."""
        if job.phase in (Phase.ENDING, Phase.ENDED) or self._jobs.get(job.job_id) is not job:
            return False
        job.phase = Phase.ENDING
        return True

    def release(self, job: Job) -> None:
        """The outcome is reported and the pod's removal asked for: the slot is free."""
        job.phase = Phase.ENDED
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]

    def checkpoint(self, job_id: str, pod: PodIdentity, checkpoint: pb.Checkpoint) -> bool:
        """The latest checkpoint of the job's agent, from its current pod (a failover hands it
        to the next pod); an older one than it holds is ignored. True when it is taken."""
        job = self._jobs.get(job_id)
        newer = job is not None and (job.checkpoint is None or checkpoint.seq > job.checkpoint.seq)
        if job is not None and job.pod == pod and newer:
            job.checkpoint = checkpoint
            return True
        return False

    # -- derived ------------------------------------------------------------------------------
    def _expire_offers(self) -> None:
        now = self._clock()
        for job in [j for j in self._jobs.values() if j.phase is Phase.OFFERED and j.offered_until < now]:
            del self._jobs[job.job_id]

    @property
    def offered(self) -> int:
        self._expire_offers()
        return sum(1 for j in self._jobs.values() if j.phase is Phase.OFFERED)

    @property
    def busy(self) -> int:
        """Jobs that hold a pod or are getting one."""
        return sum(1 for j in self._jobs.values() if j.phase in HOLDS_POD)

    @property
    def waiting_for_pod(self) -> int:
        """Jobs being placed that have no pod yet."""
        return sum(1 for j in self._jobs.values() if j.phase is Phase.PLACING and j.pod is None)

    def joined(self, job_id: str, pod: PodIdentity) -> bool:
        """The job's runner on ``pod`` says its room is joined; False if that is not its pod."""
        job = self._jobs.get(job_id)
        if job is None or job.pod != pod:
            return False
        job.joined_on = pod
        return True

    @property
    def starting(self) -> int:
        """Jobs on a pod that have not joined their room yet: their runner has not started
        them, or has (a livekit-agents entrypoint runs) and not said the room is joined. An
        adopted job is mid-call."""
        return sum(1 for j in self._jobs.values() if j.pod is not None and _joining(j))

    @property
    def with_pod(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.pod is not None and j.phase in HOLDS_POD]


def _joining(job: Job) -> bool:
    if job.phase is Phase.STARTING:
        return True
    return job.phase is Phase.RUNNING and not job.adopted and job.joined_on != job.pod
