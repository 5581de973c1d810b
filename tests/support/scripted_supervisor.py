"""The operator's side of the runner stream, scripted, and the runner as a real process.

A gRPC server on loopback welcomes every runner (no authentication), pings it, records what it
sends and lets the test send it what the operator would; the runner is ``python -m
agent_jobrunner.cli`` with the environment a pod would give it. Used by the runner's own tests
(``tests/e2e/test_runner_room.py``) and the voice pipeline's (``tests/voicekit``).
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
from livekit.protocol import agent as lk_agent
from livekit.protocol import models

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, now_us, pb, pb_grpc
from devenv.environment import REPO_ROOT
from devenv.livekit import LiveKitAccess, room_token

# generous: a slow 2-core machine runs the runner, livekit-server and the test at once
WAIT = 60.0
CREDENTIAL = "test-credential-not-checked-here"


class Session:
    """The supervisor's end of one Attach stream."""

    def __init__(self, hello: pb.Hello, session_id: str) -> None:
        self.hello = hello
        self.session_id = session_id
        self.received: list[pb.RunnerMessage] = []
        self.pings_sent: set[int] = set()
        self.start_tokens: list[str] = []
        self.outbox: asyncio.Queue[pb.SupervisorMessage] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()

    async def add(self, message: pb.RunnerMessage) -> None:
        async with self._changed:
            self.received.append(message)
            self._changed.notify_all()

    async def mark_ended(self) -> None:
        async with self._changed:
            self.ended.set()
            self._changed.notify_all()

    def send(self, message: pb.SupervisorMessage) -> None:
        if message.WhichOneof("message") == "start_job":
            self.start_tokens.append(message.start_job.token)
        self.outbox.put_nowait(message)

    def of(self, kind: str) -> list[pb.RunnerMessage]:
        return [m for m in self.received if m.WhichOneof("message") == kind]

    def logs(self) -> list[pb.LogRecord]:
        return [m.log for m in self.of("log")]

    async def expect(
        self, kind: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT
    ) -> Any:
        """The first message of ``kind`` (its payload) that ``match``es, waiting for it if need be."""

        def find() -> Any:
            for m in self.received:
                if m.WhichOneof("message") == kind and match(getattr(m, kind)):
                    return getattr(m, kind)
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                kinds = [m.WhichOneof("message") for m in self.received]
                raise AssertionError(f"no matching {kind} within {timeout}s; received {kinds}") from None
        return find()

    async def expect_log(
        self, message: str | Callable[[pb.LogRecord], bool], timeout: float = WAIT, what: str = ""
    ) -> pb.LogRecord:
        """The first forwarded log record starting with ``message`` (or matching it, a predicate)."""
        match = message if callable(message) else (lambda r: r.message.startswith(message))
        try:
            record: pb.LogRecord = await self.expect("log", match, timeout)
        except AssertionError:
            recent = "\n".join(f"  {r.logger}: {r.message} {dict(r.extra)}" for r in self.logs()[-40:])
            wanted = what or (message if isinstance(message, str) else "log record")
            raise AssertionError(f"no {wanted!r} within {timeout}s; the last records:\n{recent}") from None
        return record

    def events(self, kind: str) -> list[pb.LogRecord]:
        """Records of ``kind`` in their ``event`` extra (the voice example logs its events so)."""
        return [r for r in self.logs() if r.extra.get("event") == kind]

    async def expect_event(
        self, kind: str, match: Callable[[pb.LogRecord], bool] = lambda _: True, timeout: float = WAIT
    ) -> pb.LogRecord:
        return await self.expect_log(
            lambda r: r.extra.get("event") == kind and match(r), timeout, f"event {kind}"
        )

    async def wait_ended(self, timeout: float = WAIT) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)


class ScriptedSupervisor(pb_grpc.RunnerSupervisorServicer):
    """Welcomes every runner (no authentication here), pings it, records what it sends."""

    def __init__(self, ping_interval: float = 0.5) -> None:
        self.ping_interval = ping_interval
        self.sessions: list[Session] = []
        # status codes to end the next attaches with, instead of welcoming them
        self.refuse: list[grpc.StatusCode] = []
        self.refused: list[tuple[float, pb.Hello]] = []
        # False: welcome runners but never ping them (a wedged operator)
        self.pinging = True
        self._changed = asyncio.Condition()

    async def Attach(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("message") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
            return
        if self.refuse:
            self.refused.append((asyncio.get_running_loop().time(), first.hello))
            await context.abort(self.refuse.pop(0), "refused by the test")
            return
        session = Session(first.hello, uuid.uuid4().hex[:8])
        await context.write(
            pb.SupervisorMessage(
                welcome=pb.Welcome(
                    session_id=session.session_id,
                    protocol_version=PROTOCOL_VERSION,
                    ping_interval_ms=int(self.ping_interval * 1000),
                )
            )
        )
        async with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()

        async def read() -> None:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                await session.add(message)

        async def write() -> None:
            while True:
                await context.write(await session.outbox.get())

        pinging = self.pinging

        async def ping() -> None:
            if not pinging:
                await asyncio.Event().wait()  # this session never pings
            while True:
                ts = now_us()
                session.pings_sent.add(ts)
                session.send(pb.SupervisorMessage(ping=pb.Ping(timestamp_us=ts)))
                await asyncio.sleep(self.ping_interval)

        tasks = [asyncio.create_task(c) for c in (read(), write(), ping())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # first, without awaiting: when the runner cancels its stream, grpc.aio may cancel
            # this handler a second time while it cleans up, and an await here would be cut
            # short before the session is marked ended (test_silent_operator_stream_is_replaced
            # then waited forever on first.wait_ended())
            session.ended.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.mark_ended()  # wakes whoever waits on the session's condition

    async def session(self, index: int = 0, timeout: float = WAIT) -> Session:
        """The ``index``-th session that attached, waiting for it if need be."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sessions) > index), timeout)
            except TimeoutError:
                raise AssertionError(f"runner attach #{index + 1} did not happen within {timeout}s") from None
        return self.sessions[index]


class SupervisorServer:
    def __init__(self, credentials: Any = None) -> None:
        self.servicer = ScriptedSupervisor()
        self.port = 0
        self.credentials = credentials
        self._server: Any = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 1),
            ]
        )
        pb_grpc.add_RunnerSupervisorServicer_to_server(self.servicer, server)
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def __aenter__(self) -> SupervisorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class RunnerProcess:
    """``python -m agent_jobrunner.cli`` with a pod's environment; its output in a file."""

    def __init__(self, workdir: Path, port: int, entrypoint: str, env: dict[str, str] | None = None) -> None:
        """``entrypoint`` is ``module:function``."""
        self.workdir = workdir
        self.log_path = workdir / "runner.log"
        self.token_path = workdir / "token"
        self.token_path.write_text(CREDENTIAL + "\n")
        self.pod_name = f"runner-{uuid.uuid4().hex[:6]}"
        self.pod_uid = str(uuid.uuid4())
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "AGENT_OPERATOR_ADDRESS": f"127.0.0.1:{port}",
            "AGENT_POD_NAME": self.pod_name,
            "AGENT_POD_NAMESPACE": "runner-tests",
            "AGENT_POD_UID": self.pod_uid,
            "AGENT_RUNNER_TOKEN_PATH": str(self.token_path),
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

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"runner still running after {timeout}s; its output:\n{self.output()[-6000:]}"
            ) from None

    async def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


class Runners:
    """The runner processes one test starts, each in its own folder below ``workdir``.

    ``close`` prints each one's state and output (pytest shows it when the test failed) and
    kills those still running: what a test's ``runners`` fixture does after the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.made: list[RunnerProcess] = []

    def make(self, port: int, entrypoint: str, env: dict[str, str] | None = None) -> RunnerProcess:
        """A runner (not started) for ``entrypoint`` (``module:function``)."""
        folder = self.workdir / f"runner-{len(self.made)}"
        folder.mkdir()
        runner = RunnerProcess(folder, port, entrypoint, env)
        self.made.append(runner)
        return runner

    async def close(self) -> None:
        for runner in self.made:
            code = runner.proc.returncode if runner.proc else "-"
            state = "still running" if runner.running else f"exited {code}"
            print(f"--- runner {runner.pod_name} ({state}); output:\n{runner.output()[-8000:]}")
            await runner.kill()


def start_request(
    livekit: LiveKitAccess,
    room: str,
    auto_subscribe: pb.AutoSubscribe.ValueType = pb.AUTO_SUBSCRIBE_ALL,
    agent_name: str = "test-agent",
    participant_name: str = "Test Agent",
    metadata: str = '{"purpose": "test"}',
    attributes: dict[str, str] | None = None,
) -> tuple[pb.StartJobRequest, lk_agent.Job]:
    """A job for ``room`` as the operator would hand it over, with a real room token."""
    job = lk_agent.Job(
        id=f"AJ_{uuid.uuid4().hex[:10]}",
        type=lk_agent.JT_ROOM,
        room=models.Room(name=room),
        agent_name=agent_name,
    )
    identity = f"agent-{job.id}"
    request = pb.StartJobRequest(
        job=job.SerializeToString(),
        url=livekit.url,
        token=room_token(livekit, room, identity, agent=True),
        participant_identity=identity,
        participant_name=participant_name,
        participant_metadata=metadata,
        participant_attributes={"role": "agent", "tier": "test"} if attributes is None else attributes,
        auto_subscribe=auto_subscribe,
    )
    return request, job
