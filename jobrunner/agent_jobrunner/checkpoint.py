"""A job's checkpoints: the agent's small conversation state, streamed to the operator for failover.

The runner makes one :class:`Checkpointer` per job when it accepts the StartJobRequest. Each
:meth:`Checkpointer.update` serializes the state as compact JSON (sorted keys), refuses it over
:data:`MAX_CHECKPOINT_BYTES`, skips it when it equals the last one sent, numbers it (the seq goes
on from the restored checkpoint's, across the job's pods) and hands it to the link, which keeps
only the latest: a checkpoint replaces one not yet written, and the latest is sent again after
every re-attach (a new operator has it at once). If the job's pod dies, the operator starts the
job on a new pod with the last checkpoint it got (``StartJobRequest.restored_state``), which
:func:`restored_state` reads back.

A checkpoint is conversation state only: never a token, a key or audio.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

# the most state bytes the operator takes in one checkpoint (it refuses a larger one); one
# constant for both ends, in the protocol package
from agent_jobrunner.protocol import MAX_CHECKPOINT_BYTES, pb

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "CheckpointSink",
    "CheckpointTooLarge",
    "Checkpointer",
    "LatestCheckpoint",
    "encode_state",
    "fit_history",
    "restored_state",
]

logger = logging.getLogger(__name__)


class CheckpointTooLarge(ValueError):
    """The state's JSON is over :data:`MAX_CHECKPOINT_BYTES`."""

    def __init__(self, size: int, limit: int = MAX_CHECKPOINT_BYTES) -> None:
        super().__init__(f"a checkpoint of {size} bytes is over the bound of {limit} bytes")
        self.size = size
        self.limit = limit


class CheckpointSink(Protocol):
    """Where checkpoints go: the operator link (:meth:`OperatorLink.send_checkpoint`)."""

    def send_checkpoint(self, message: pb.RunnerMessage) -> None: ...


class LatestCheckpoint:
    """The link's checkpoint slot: the latest checkpoint and whether it is still to be written.

    Not a queue: a checkpoint put while the last one waits replaces it. After a re-attach the
    latest goes out again (:meth:`resend`), so a new operator has it even if the old one had it.
    """

    def __init__(self) -> None:
        self._latest: pb.RunnerMessage | None = None
        self._unsent = False

    def put(self, message: pb.RunnerMessage) -> None:
        self._latest = message
        self._unsent = True

    def take(self) -> pb.RunnerMessage | None:
        """The latest checkpoint if it is still to be written (then it is marked written)."""
        if not self._unsent:
            return None
        self._unsent = False
        return self._latest

    def resend(self) -> None:
        """A new stream: the latest is to be written again (if there is one)."""
        self._unsent = self._latest is not None

    def end(self) -> pb.RunnerMessage | None:
        """The job is ending: the latest if still to be written; none is kept or sent again."""
        unsent = self.take()
        self._latest = None
        return unsent


def encode_state(state: Mapping[str, Any]) -> bytes:
    """The state as a checkpoint carries it: compact UTF-8 JSON with sorted keys (equal states,
    equal bytes). Raises ``TypeError`` for a value JSON cannot hold."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint state is a mapping (a JSON object), not {type(state).__name__}")
    return json.dumps(state, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def fit_history(
    items: Sequence[Mapping[str, Any]],
    state_of: Callable[[list[Mapping[str, Any]]], dict[str, Any]],
    *,
    pinned: Callable[[Mapping[str, Any]], bool],
    orphan: Callable[[Mapping[str, Any]], bool],
    limit: int = MAX_CHECKPOINT_BYTES,
) -> tuple[dict[str, Any], int]:
    """``state_of(items)`` with the oldest items dropped until its JSON fits ``limit`` bytes
    (never a ``pinned`` one, as the instructions), and then an ``orphan`` one left first (a
    tool's result whose call went); the state and how many items were dropped. The state may
    still be over the bound when the pinned items alone are."""
    sizes = [len(encode_state(item)) + 1 for item in items]  # and a comma
    total = len(encode_state(state_of([]))) + sum(sizes)
    keep = [True] * len(items)
    oldest = [i for i, item in enumerate(items) if not pinned(item)]
    dropped = 0
    while oldest and (total > limit or (dropped and orphan(items[oldest[0]]))):
        index = oldest.pop(0)
        keep[index] = False
        total -= sizes[index]
        dropped += 1
    return state_of([item for item, kept in zip(items, keep, strict=True) if kept]), dropped


class Checkpointer:
    """The checkpoints of one job: numbered from ``restored_seq + 1``, latest-only, deduplicated."""

    def __init__(
        self, job_id: str, sink: CheckpointSink, restored_seq: int = 0, limit: int = MAX_CHECKPOINT_BYTES
    ) -> None:
        self.job_id = job_id
        self.limit = limit
        self._sink = sink
        self._seq = restored_seq
        self._last: bytes | None = None
        self._closed = False

    @property
    def seq(self) -> int:
        """The seq of the last checkpoint sent (the restored one's before any)."""
        return self._seq

    @property
    def last(self) -> bytes | None:
        """The JSON of the last checkpoint sent by this pod (None: none yet)."""
        return self._last

    def close(self) -> None:
        """The job is ending: checkpoints from now on are not sent (the operator would refuse
        them for an ended job)."""
        self._closed = True

    def update(self, state: Mapping[str, Any]) -> bool:
        """Checkpoint ``state``; False if it equals the last one or the job is ending (nothing
        sent). Raises :class:`CheckpointTooLarge` over the bound and ``TypeError`` for what JSON
        cannot hold."""
        if self._closed:
            logger.debug("the job %s is ending: checkpoint not sent", self.job_id)
            return False
        data = encode_state(state)
        if len(data) > self.limit:
            raise CheckpointTooLarge(len(data), self.limit)
        if data == self._last:
            return False
        self._seq += 1
        self._last = data
        self._sink.send_checkpoint(
            pb.RunnerMessage(checkpoint=pb.Checkpoint(job_id=self.job_id, seq=self._seq, state=data))
        )
        logger.debug("checkpoint %d of job %s: %d bytes", self._seq, self.job_id, len(data))
        return True


def restored_state(request: pb.StartJobRequest) -> dict[str, Any] | None:
    """The restored checkpoint of a restarted job (None on a first start, or if it cannot be
    read: a warning, the job starts afresh)."""
    data = request.restored_state
    if not data:
        return None
    try:
        state = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as err:
        logger.warning(
            "the restored checkpoint (%d bytes) is unreadable, starting afresh: %s", len(data), err
        )
        return None
    if not isinstance(state, dict):
        logger.warning(
            "the restored checkpoint is a JSON %s, not an object; starting afresh", type(state).__name__
        )
        return None
    return state
