"""Entrypoints the real-node tests run in job pods: what a container's limits and securityContext do."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("test.agent")
CHUNK = 16 * 1024 * 1024


async def hog_memory(ctx: Any) -> None:
    """Joined (the start is reported), then allocate and touch memory until the kernel kills us."""
    await asyncio.sleep(1.0)
    log.info("allocating memory until OOM-killed")
    held: list[bytearray] = []
    while True:
        held.append(bytearray(b"\x01" * CHUNK))
        await asyncio.sleep(0.02)


async def hog_memory_on_first_start(ctx: Any) -> None:
    """Failover: on its first start, checkpoint, then hog memory until OOM-killed; started
    again on a new pod (``ctx.restarts``), say so with what was restored, and stay in the room."""
    if ctx.restarts == 0:
        ctx.checkpoint({"phase": "hogging"})
        await hog_memory(ctx)
    log.info("restarted %d time(s), restored %s", ctx.restarts, ctx.restored)
    await asyncio.Event().wait()


async def checkpoint_then_idle(ctx: Any) -> None:
    """Failover: checkpoint once and stay in the room; started again on a new pod, say so with
    what was restored (and stay)."""
    if ctx.restarts == 0:
        ctx.checkpoint({"said": "hello"})
    else:
        log.info("restarted %d time(s), restored %s", ctx.restarts, ctx.restored)
    await asyncio.Event().wait()


def _try_write(path: Path) -> str:
    try:
        path.write_text("probe")
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    path.unlink()
    return "ok"


def _effective_capabilities() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return "unknown"


async def report_sandbox(ctx: Any) -> None:
    """Log what the container lets the agent do, then end the job well."""
    log.info(
        "sandbox uid=%d gid=%d root_write=%s app_write=%s tmp_write=%s capeff=%s",
        os.getuid(),
        os.getgid(),
        _try_write(Path("/probe")),
        _try_write(Path("/app/probe")),
        _try_write(Path("/tmp/probe")),
        _effective_capabilities(),
    )
    ctx.shutdown("sandbox reported")


async def unhealthy_after_start(ctx: Any) -> None:
    """Joined (the start is reported), then mark itself unhealthy (``/tmp/unhealthy``, which the
    test's liveness probe checks) and idle until stopped."""
    await asyncio.sleep(1.0)
    await asyncio.to_thread(Path("/tmp/unhealthy").write_text, "unhealthy\n")
    log.info("marked unhealthy for the liveness probe")
    await asyncio.Event().wait()


async def keep_or_forge(ctx: Any) -> None:
    """Failover: a job whose metadata is ``forge:<job id>`` is a forged runner: it writes a
    checkpoint for that other job on its own stream, past the runner's API (as code that owns its
    pod could); any other job is ``checkpoint_then_idle``."""
    target = ctx.job.metadata.removeprefix("forge:") if ctx.job.metadata.startswith("forge:") else ""
    if not target:
        await checkpoint_then_idle(ctx)
        return
    from agent_jobrunner.protocol import pb

    state = b'{"said": "forged"}'
    forged = pb.RunnerMessage(checkpoint=pb.Checkpoint(job_id=target, seq=1_000_000, state=state))
    ctx._checkpointer._sink.send_checkpoint(forged)
    log.info("forged a checkpoint for job %s", target)
    await asyncio.Event().wait()
