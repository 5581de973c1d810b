"""livekit-agents agents for the livekit-agents runtime's tests, in the framework's own styles.

``server`` (an ``AgentServer`` with a ``setup_fnc`` and an ``on_session_end``), ``options`` (the
older ``WorkerOptions`` with a ``prewarm_fnc``) and ``entrypoint`` (a bare function) are the same
agent. What it does once a participant is there comes from ``LKA_TEST_MODE``: ``shutdown``
(``ctx.shutdown()``), ``raise``, or anything else: return and let the job go on until it is
ended from outside.
With ``LKA_TEST_CONNECT_GATE`` (a file's path) set, it calls ``ctx.connect()`` only once that
file exists.
``broken`` and ``hanging`` are the same agent with a ``setup_fnc`` that raises or never returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobProcess, WorkerOptions

logger = logging.getLogger("tests.agents.lka")

PREWARMED = "prewarmed-42"


def prewarm(proc: JobProcess) -> None:
    proc.userdata["greeting"] = PREWARMED


def broken_prewarm(proc: JobProcess) -> None:
    raise RuntimeError("the model file is missing")


async def on_participant(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    logger.info("participant entrypoint ran", extra={"participant": participant.identity})


def wait_for_file(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)


async def entrypoint(ctx: JobContext) -> None:
    async def on_shutdown(reason: str) -> None:
        logger.info("shutdown callback ran", extra={"shutdown_reason": reason})

    ctx.add_shutdown_callback(on_shutdown)
    ctx.add_participant_entrypoint(on_participant)
    gate = os.environ.get("LKA_TEST_CONNECT_GATE")
    if gate:
        logger.info("lka entrypoint waiting to connect")
        await asyncio.to_thread(wait_for_file, Path(gate))
    await ctx.connect()
    logger.info(
        "lka entrypoint connected",
        extra={
            "userdata": ctx.proc.userdata.get("greeting", ""),
            "agent_identity": ctx.room.local_participant.identity,
            "room_name": ctx.room.name,
            "ctx_job_id": ctx.job.id,
        },
    )
    participant = await ctx.wait_for_participant()
    logger.info("participant arrived", extra={"participant": participant.identity})
    mode = os.environ.get("LKA_TEST_MODE", "")
    if mode == "shutdown":
        ctx.shutdown("the agent is done")
    elif mode == "raise":
        raise RuntimeError("the agent broke")


async def session_ended(ctx: JobContext) -> None:
    logger.info("on_session_end ran", extra={"ctx_job_id": ctx.job.id})


server = AgentServer(setup_fnc=prewarm)
server.rtc_session(entrypoint, agent_name="lka-test", on_session_end=session_ended)

options = WorkerOptions(entrypoint_fnc=entrypoint, prewarm_fnc=prewarm, agent_name="lka-test")

broken = AgentServer(setup_fnc=broken_prewarm)
broken.rtc_session(entrypoint, agent_name="lka-test")

no_entrypoint = AgentServer()


def hanging_prewarm(proc: JobProcess) -> None:
    threading.Event().wait()  # a model download that never ends


# a prewarm that hangs: bounded by the server's own initialize_process_timeout
hanging = AgentServer(setup_fnc=hanging_prewarm, initialize_process_timeout=2.0)
hanging.rtc_session(entrypoint, agent_name="lka-test")
