"""The supervisor's settings."""

from __future__ import annotations

import dataclasses

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES
from agent_operator.supervisor.admission import AdmissionSettings
from agent_operator.supervisor.heartbeat import HeartbeatSettings


@dataclasses.dataclass(frozen=True)
class SupervisorSettings:
    # the first message (Hello) must arrive within this
    hello_timeout: float = 10.0
    # a running job whose stream broke waits this long for its runner to re-attach
    reattach_grace: float = 15.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # for pods attached through the resolver without settings of their own
    default_heartbeat: HeartbeatSettings = dataclasses.field(default_factory=HeartbeatSettings)
    # caps on streams that have not attached yet and on credential checks (see admission)
    admission: AdmissionSettings = dataclasses.field(default_factory=AdmissionSettings)
