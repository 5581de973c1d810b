"""The example livekit-agents agent under livekit-agents' own worker: ``python agent.py start``.

For the tests and benchmarks that compare the runner with livekit-agents itself: the same
agent file, the same livekit-server, registered under its own agent name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from livekit import api

from devenv.environment import REPO_ROOT
from devenv.livekit import LiveKitAccess

EXAMPLE = REPO_ROOT / "jobrunner" / "examples" / "weather-agent"
EXAMPLE_PATH = os.pathsep.join([str(EXAMPLE), str(REPO_ROOT)])
REGISTER_TIMEOUT = 90.0


@dataclasses.dataclass
class LkaWorker:
    process: asyncio.subprocess.Process
    log_path: Path
    agent_name: str
    livekit: LiveKitAccess

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def dispatch(self, room: str) -> None:
        access = self.livekit
        async with api.LiveKitAPI(access.http_url, access.api_key, access.api_secret) as lk:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=self.agent_name, room=room)
            )


@contextlib.asynccontextmanager
async def example_worker(livekit: LiveKitAccess, workdir: Path, agent_name: str) -> AsyncIterator[LkaWorker]:
    """The example agent's worker, registered with livekit-server; terminated on exit."""
    log_path = workdir / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": EXAMPLE_PATH,
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "AGENT_NAME": agent_name,
        # its CPU-based load makes LiveKit offer it no job on this shared machine
        "IGNORE_CPU_LOAD": "1",
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE / "agent.py"), "start", env=env, cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    worker = LkaWorker(process, log_path, agent_name, livekit)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_TIMEOUT
        while b"registered worker" not in log_path.read_bytes():
            assert process.returncode is None, worker.output()[-4000:]
            assert loop.time() < deadline, "the livekit-agents worker did not register"
            await asyncio.sleep(0.5)
        yield worker
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
