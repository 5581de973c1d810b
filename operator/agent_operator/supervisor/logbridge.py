"""Runner log records, re-emitted through the operator's logger with the job's fields."""

from __future__ import annotations

import logging

from agent_jobrunner.protocol import pb

runner_log = logging.getLogger("agent_operator.runner")

_LEVELS = {
    pb.LOG_LEVEL_DEBUG: logging.DEBUG,
    pb.LOG_LEVEL_INFO: logging.INFO,
    pb.LOG_LEVEL_WARNING: logging.WARNING,
    pb.LOG_LEVEL_ERROR: logging.ERROR,
    pb.LOG_LEVEL_CRITICAL: logging.CRITICAL,
}
# extras a runner may not overwrite: the operator's own job fields and LogRecord internals
_RESERVED = {"job_id", "room", "pod", "deployment"} | set(logging.makeLogRecord({}).__dict__) | {"message"}


def reemit(record: pb.LogRecord, fields: dict[str, str]) -> None:
    level = _LEVELS.get(record.level, logging.INFO)
    if not runner_log.isEnabledFor(level):
        return
    extra: dict[str, object] = {f"runner_{k}" if k in _RESERVED else k: v for k, v in record.extra.items()}
    extra.update(fields)
    extra["runner_logger"] = record.logger
    if record.timestamp_us:
        extra["runner_ts_us"] = record.timestamp_us
    message = record.message
    if record.exception:
        message = f"{message}\n{record.exception}"
    runner_log.log(level, "%s", message, extra=extra)
