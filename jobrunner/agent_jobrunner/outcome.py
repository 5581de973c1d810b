"""How a job (or an idle runner) ended, and what follows from it: the messages and the exit code."""

from __future__ import annotations

import dataclasses
import enum

from agent_jobrunner.protocol import pb

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_OPERATOR_LOST = 4


class EndCause(enum.Enum):
    ENTRYPOINT_RETURNED = "entrypoint returned"
    USER_SHUTDOWN = "ctx.shutdown() called"
    ROOM_DISCONNECTED = "room disconnected"
    ENTRYPOINT_FAILED = "entrypoint raised"
    START_FAILED = "job failed to start"
    SHUTDOWN_REQUESTED = "operator sent ShutdownRequest"
    SIGNALLED = "signal received"
    OPERATOR_LOST = "could not re-attach to the operator in time"


@dataclasses.dataclass(frozen=True)
class JobEnd:
    cause: EndCause
    reason: str = ""
    error: str = ""
    # for ENTRYPOINT_FAILED: the exception, so its traceback can be logged
    exception: BaseException | None = None
    # seconds the operator gave for the shutdown (ShutdownRequest.grace_ms), if any
    grace: float | None = None


def exit_code(cause: EndCause) -> int:
    """The runner's exit code for a job (or idle runner) that ended this way."""
    if cause in (EndCause.ENTRYPOINT_FAILED, EndCause.START_FAILED):
        return EXIT_JOB_FAILED
    if cause is EndCause.OPERATOR_LOST:
        return EXIT_OPERATOR_LOST
    return EXIT_OK


def is_user_exit(cause: EndCause) -> bool:
    """The job ended on its own, successfully: the operator gets a ``UserExit``."""
    return cause in (EndCause.ENTRYPOINT_RETURNED, EndCause.USER_SHUTDOWN, EndCause.ROOM_DISCONNECTED)


def is_shutdown(cause: EndCause) -> bool:
    """The job was told to end from outside (operator or pod deletion)."""
    return cause in (EndCause.SHUTDOWN_REQUESTED, EndCause.SIGNALLED, EndCause.OPERATOR_LOST)


def final_job_state(cause: EndCause) -> pb.JobState.ValueType:
    if cause in (EndCause.ENTRYPOINT_FAILED, EndCause.START_FAILED, EndCause.OPERATOR_LOST):
        return pb.JOB_STATE_FAILED
    return pb.JOB_STATE_SUCCEEDED


def shutdown_budget(grace_ms: int, default_seconds: float) -> float:
    """Seconds to wind a job down: the operator's grace when it gave one, else the configured timeout."""
    return grace_ms / 1000.0 if grace_ms > 0 else default_seconds
