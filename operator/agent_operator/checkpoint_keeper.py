"""Writes each running job's latest checkpoint to its pod, sealed, so that it survives an
operator restart (where and why that is safe: ``kube.pod_checkpoint``).

Off the job's path: ``keep`` only notes the checkpoint; one writer per job seals and patches
it, at most once per ``interval`` (the first at once), the latest noted winning over any
older one not written yet. A checkpoint is written only to the pod that is still the job's
(a job that ended, or was restarted on a new pod, gets nothing more on its old one). A failed
write is logged once per job (until a write succeeds again) and not repeated: the next
checkpoint is the retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent_jobrunner.protocol import pb
from agent_operator.collaborators import Pods
from agent_operator.kube.pod_checkpoint import ANNOTATION_CHECKPOINT
from agent_operator.kube.pods import brief
from agent_operator.tasks import BackgroundTasks
from agent_operator.vocabulary import PodIdentity

log = logging.getLogger("agent_operator.deployment")

WRITE_INTERVAL_SECONDS = 1.0


class CheckpointKeeper:
    def __init__(
        self,
        pods: Pods,
        seal: Callable[[pb.Checkpoint], str],  # "" when it cannot be sealed (no credentials)
        current: Callable[[str], PodIdentity | None],  # the job's pod while it runs there
        fields: dict[str, str],
        interval: float = WRITE_INTERVAL_SECONDS,
    ) -> None:
        self._pods = pods
        self._seal = seal
        self._current = current
        self._fields = fields
        self._interval = interval
        self._pending: dict[str, tuple[PodIdentity, pb.Checkpoint]] = {}
        self._writing: set[str] = set()  # jobs with a writer
        self._failing: set[str] = set()  # jobs whose last write failed (logged once)
        self._tasks = BackgroundTasks(log, "checkpoint write", fields)

    def keep(self, pod: PodIdentity, checkpoint: pb.Checkpoint) -> None:
        """Note the job's latest checkpoint, taken from ``pod``'s runner; written soon."""
        job_id = checkpoint.job_id
        self._pending[job_id] = (pod, checkpoint)
        if job_id not in self._writing:
            self._writing.add(job_id)
            self._tasks.spawn(self._write(job_id))

    async def _write(self, job_id: str) -> None:
        try:
            while (noted := self._pending.pop(job_id, None)) is not None:
                pod, checkpoint = noted
                if self._current(job_id) != pod:
                    continue  # not (or no longer) the job's pod
                await self._write_one(job_id, pod, checkpoint)
                await asyncio.sleep(self._interval)
        finally:
            self._writing.discard(job_id)
            if self._current(job_id) is None:
                self._failing.discard(job_id)  # the job is over here

    async def _write_one(self, job_id: str, pod: PodIdentity, checkpoint: pb.Checkpoint) -> None:
        fields = {**self._fields, "job_id": job_id, "pod": str(pod)}
        sealed = self._seal(checkpoint)
        if not sealed:
            return
        try:
            await self._pods.annotate(pod, {ANNOTATION_CHECKPOINT: sealed})
        except Exception as exc:
            if self._current(job_id) != pod:
                return  # the job ended (or moved on) meanwhile: its pod may be gone already
            if job_id not in self._failing:
                self._failing.add(job_id)
                log.warning(
                    "could not keep the job's checkpoint on its pod (%s); the next one is tried",
                    brief(exc),
                    extra=fields,
                )
            return
        if job_id in self._failing:
            self._failing.discard(job_id)
            log.info("the job's checkpoint is kept on its pod again", extra=fields)

    def __len__(self) -> int:
        """Writers running."""
        return len(self._writing)

    async def close(self) -> None:
        await self._tasks.close()
