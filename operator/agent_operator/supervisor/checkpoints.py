"""A runner's checkpoints of its agent's state (failover: a job restarted on a new pod starts
from the last one). The supervisor takes one only from the stream of the pod whose job it
is, while that job runs, as a JSON object within ``MAX_CHECKPOINT_BYTES``; anything else is
refused (logged, counted): a runner can never write another job's checkpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agent_jobrunner.protocol import MAX_CHECKPOINT_BYTES, pb
from agent_operator import metrics
from agent_operator.supervisor.slots import PodSlot
from agent_operator.supervisor.types import JobState, SupervisorListener

log = logging.getLogger("agent_operator.supervisor")


def refusal(slot: PodSlot, checkpoint: pb.Checkpoint) -> str:
    """Why the checkpoint is refused ("" when it is taken)."""
    record = slot.job
    if record is None or record.job_id != checkpoint.job_id:
        return "not_its_job"
    if record.state is JobState.ENDED:
        return "job_ended"
    if len(checkpoint.state) > MAX_CHECKPOINT_BYTES:
        return "too_large"
    try:
        if not isinstance(json.loads(checkpoint.state), dict):
            return "not_json"
    except (ValueError, UnicodeDecodeError):
        return "not_json"
    return ""


def take(
    slot: PodSlot,
    checkpoint: pb.Checkpoint,
    listener: SupervisorListener,
    call: Callable[[Awaitable[Any]], None],
) -> str:
    """Pass the checkpoint on to the listener, or refuse it; returns the refusal ("" if taken)."""
    refused = refusal(slot, checkpoint)
    deployment = slot.binding.deployment
    metrics.CHECKPOINTS.labels(deployment.namespace, deployment.name, refused or "taken").inc()
    if not refused:
        assert slot.job is not None
        metrics.CHECKPOINT_BYTES.labels(deployment.namespace, deployment.name).observe(len(checkpoint.state))
        call(listener.job_checkpoint(slot.job, checkpoint))
        return ""
    log.warning(
        "checkpoint refused (%s): job %r, %d bytes",
        refused,
        checkpoint.job_id,
        len(checkpoint.state),
        extra={**slot.fields(), "reason": refused},
    )
    return refused
