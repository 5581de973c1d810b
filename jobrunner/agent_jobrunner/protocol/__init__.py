"""The runner stream protocol (``proto/agentoperator/runner/v1/runner.proto``).

Generated code lives in ``_generated/`` and is produced by ``make proto``; import the
messages from here::

    from agent_jobrunner.protocol import pb, pb_grpc
"""

from __future__ import annotations

import time

from agent_jobrunner.protocol._generated.agentoperator.runner.v1 import runner_pb2 as pb
from agent_jobrunner.protocol._generated.agentoperator.runner.v1 import runner_pb2_grpc as pb_grpc

PROTOCOL_VERSION = 1
SERVICE_NAME = "agentoperator.runner.v1.RunnerSupervisor"
ATTACH_METHOD = f"/{SERVICE_NAME}/Attach"

# Messages larger than this are refused by both ends (a log record is the biggest normal one).
MAX_MESSAGE_BYTES = 1024 * 1024
# A Checkpoint's state larger than this is refused by the operator (the runner trims to fit).
MAX_CHECKPOINT_BYTES = 32 * 1024


def now_us() -> int:
    """Wall-clock microseconds, as carried in Ping/Pong."""
    return time.time_ns() // 1000


__all__ = [
    "ATTACH_METHOD",
    "MAX_CHECKPOINT_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "now_us",
    "pb",
    "pb_grpc",
]
