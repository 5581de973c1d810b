"""Structured logs: one JSON object a line, with job fields on every job line.

Secrets never reach a log line: the code does not log tokens or credentials, and the
formatter drops any extra whose name looks like one, as a second line of defence.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

JOB_FIELDS = ("job_id", "room", "pod", "deployment")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_SECRETISH = ("token", "secret", "credential", "password", "authorization")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(s in key.lower() for s in _SECRETISH):
                continue
            out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # the client libraries are chatty at DEBUG and would drown job lines
    for noisy in ("aiohttp", "grpc", "asyncio", "kopf.objects"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # kubernetes_asyncio logs whole response bodies at DEBUG; a TokenReview's body echoes the
    # token it reviewed, so this logger never goes below WARNING
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
