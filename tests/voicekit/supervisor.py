"""The operator's side of the runner stream, scripted, and the runner as a real process.

A trimmed copy of the approach of ``tests/e2e/test_runner_room.py``: a gRPC server on loopback
welcomes the runner, pings it, records what it sends, and hands it one job.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from livekit import api
from livekit.protocol import agent as lk_agent
from livekit.protocol import models

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, now_us, pb, pb_grpc
from tests.testenv.environment import REPO_ROOT
from tests.testenv.livekit import LiveKitAccess

WAIT = 60.0
CREDENTIAL = "voice-test-credential"
VOICE_AGENT = "agent_jobrunner.examples.voice:entrypoint"


class Session:
    """One Attach stream, as the operator sees it."""

    def __init__(self, hello: pb.Hello) -> None:
        self.hello = hello
        self.received: list[pb.RunnerMessage] = []
        self.outbox: asyncio.Queue[pb.SupervisorMessage] = asyncio.Queue()
        self._changed = asyncio.Condition()

    async def add(self, message: pb.RunnerMessage) -> None:
        async with self._changed:
            self.received.append(message)
            self._changed.notify_all()

    def send(self, message: pb.SupervisorMessage) -> None:
        self.outbox.put_nowait(message)

    def logs(self) -> list[pb.LogRecord]:
        return [m.log for m in self.received if m.WhichOneof("message") == "log"]

    def events(self, kind: str) -> list[pb.LogRecord]:
        """The example agent's ``voice event`` records of one kind, in order."""
        return [r for r in self.logs() if r.extra.get("event") == kind]

    async def expect(
        self, kind: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT
    ) -> Any:
        def find() -> Any:
            for m in self.received:
                if m.WhichOneof("message") == kind and match(getattr(m, kind)):
                    return getattr(m, kind)
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                raise AssertionError(f"no matching {kind} within {timeout}s") from None
        return find()

    async def expect_log(
        self, match: Callable[[pb.LogRecord], bool], timeout: float = WAIT, what: str = "log record"
    ) -> pb.LogRecord:
        try:
            record: pb.LogRecord = await self.expect("log", match, timeout)
        except AssertionError:
            recent = "\n".join(f"  {r.logger}: {r.message} {dict(r.extra)}" for r in self.logs()[-40:])
            raise AssertionError(f"no {what} within {timeout}s; the last records:\n{recent}") from None
        return record

    async def expect_event(
        self, kind: str, match: Callable[[pb.LogRecord], bool] = lambda _: True, timeout: float = WAIT
    ) -> pb.LogRecord:
        return await self.expect_log(
            lambda r: r.extra.get("event") == kind and match(r), timeout, f"voice event {kind}"
        )


class Supervisor(pb_grpc.RunnerSupervisorServicer):
    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self._changed = asyncio.Condition()

    async def Attach(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("message") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
            return
        session = Session(first.hello)
        await context.write(
            pb.SupervisorMessage(
                welcome=pb.Welcome(
                    session_id=uuid.uuid4().hex[:8], protocol_version=PROTOCOL_VERSION, ping_interval_ms=1000
                )
            )
        )
        async with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()

        async def read() -> None:
            while (message := await context.read()) is not grpc.aio.EOF:
                await session.add(message)

        async def write() -> None:
            while True:
                await context.write(await session.outbox.get())

        async def ping() -> None:
            while True:
                session.send(pb.SupervisorMessage(ping=pb.Ping(timestamp_us=now_us())))
                await asyncio.sleep(1.0)

        tasks = [asyncio.create_task(c) for c in (read(), write(), ping())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def session(self, timeout: float = WAIT) -> Session:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.sessions)), timeout)
            except TimeoutError:
                raise AssertionError(f"no runner attached within {timeout}s") from None
        return self.sessions[0]


class SupervisorServer:
    def __init__(self) -> None:
        self.servicer = Supervisor()
        self.port = 0
        self._server: Any = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        pb_grpc.add_RunnerSupervisorServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None


class RunnerProcess:
    """``python -m agent_jobrunner.cli`` with a pod's environment; its output in a file."""

    def __init__(self, workdir: Path, port: int, entrypoint: str, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / "runner.log"
        token = workdir / "token"
        token.write_text(CREDENTIAL + "\n")
        self.workdir = workdir
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "AGENT_OPERATOR_ADDRESS": f"127.0.0.1:{port}",
            "AGENT_POD_NAME": f"voice-{uuid.uuid4().hex[:6]}",
            "AGENT_POD_NAMESPACE": "voice-tests",
            "AGENT_POD_UID": str(uuid.uuid4()),
            "AGENT_RUNNER_TOKEN_PATH": str(token),
            "AGENT_ENTRYPOINT": entrypoint,
            "AGENT_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent_jobrunner.cli",
                env=self.env,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"runner still running after {timeout}s:\n{self.output()[-4000:]}") from None

    async def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


def room_token(livekit: LiveKitAccess, room: str, identity: str, agent: bool = False) -> str:
    grants = api.VideoGrants(room_join=True, room=room, agent=agent, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


def start_job(session: Session, livekit: LiveKitAccess, room: str) -> lk_agent.Job:
    job = lk_agent.Job(
        id=f"AJ_{uuid.uuid4().hex[:10]}",
        type=lk_agent.JT_ROOM,
        room=models.Room(name=room),
        agent_name="voice",
    )
    identity = f"agent-{job.id}"
    request = pb.StartJobRequest(
        job=job.SerializeToString(),
        url=livekit.url,
        token=room_token(livekit, room, identity, agent=True),
        participant_identity=identity,
        participant_name="Voice Agent",
        auto_subscribe=pb.AUTO_SUBSCRIBE_AUDIO_ONLY,
    )
    session.send(pb.SupervisorMessage(start_job=request))
    return job


async def shutdown(session: Session, runner: RunnerProcess) -> int:
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="test done", grace_ms=10_000)))
    return await runner.wait(30)
