"""A livekit-agents agent whose module registers an inference runner, as the turn detector plugin does.

The runner (``Shout``) runs in livekit-agents' inference process; the job asks it through
``ctx.inference_executor`` and logs the answer with both processes' ids, then shuts down.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import AgentServer, JobContext
from livekit.agents.inference_runner import _InferenceRunner

logger = logging.getLogger("tests.agents.lka_inference")


class Shout(_InferenceRunner):
    INFERENCE_METHOD = "tests_shout"

    def initialize(self) -> None:
        self.loaded_in = os.getpid()

    def run(self, data: bytes) -> bytes | None:
        return data.upper() + f" from {self.loaded_in}".encode()


_InferenceRunner.register_runner(Shout)

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    answer = await ctx.inference_executor.do_inference(Shout.INFERENCE_METHOD, b"hello")
    assert answer is not None
    logger.info("inference answered", extra={"answer": answer.decode(), "job_pid": os.getpid()})
    ctx.shutdown("asked")
