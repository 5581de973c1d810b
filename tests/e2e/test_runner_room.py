"""The job runner as a real process: a scripted supervisor on loopback gRPC, the real livekit-server.

Each test starts ``python -m agent_jobrunner.cli`` with the environment a pod would give it,
plays the operator's side of the stream from here, and joins the room as a second
participant to see what the agent does in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from livekit import api, rtc
from livekit.protocol import agent as lk_agent

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, pb
from devenv.livekit import LiveKitAccess, room_token
from devenv.pki import LocalCA
from tests.support.scripted_supervisor import (
    CREDENTIAL,
    WAIT,
    RunnerProcess,
    Runners,
    Session,
    SupervisorServer,
    start_request,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AGENTS = "tests.agents.simple"
DATA_TOPIC = "agent-test"


# ------------------------------------------------------------------------------------ room side


class Caller:
    """A second participant in the room: sees who joins and what they publish."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.data: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.joined: asyncio.Queue[str] = asyncio.Queue()
        self.left: asyncio.Queue[str] = asyncio.Queue()
        self.subscribed: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

        @self.room.on("data_received")
        def _data(packet: rtc.DataPacket) -> None:
            if packet.topic == DATA_TOPIC:
                # the sender is "" when this side does not know the participant (yet, or any more)
                sender = packet.participant.identity if packet.participant is not None else ""
                self.data.put_nowait((sender, packet.data))

        @self.room.on("participant_connected")
        def _joined(participant: rtc.RemoteParticipant) -> None:
            self.joined.put_nowait(participant.identity)

        @self.room.on("participant_disconnected")
        def _left(participant: rtc.RemoteParticipant) -> None:
            self.left.put_nowait(participant.identity)

        @self.room.on("track_subscribed")
        def _track(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            self.subscribed.put_nowait((p.identity, publication.kind))

    async def join(self, livekit: LiveKitAccess, room: str) -> None:
        await self.room.connect(livekit.url, room_token(livekit, room, "caller"))

    async def next_from(
        self, queue: asyncio.Queue[Any], want: Callable[[Any], bool], timeout: float = WAIT
    ) -> Any:
        async def find() -> Any:
            while True:
                item = await queue.get()
                if want(item):
                    return item

        return await asyncio.wait_for(find(), timeout)

    async def leave(self) -> None:
        await self.room.disconnect()


async def participants(livekit: LiveKitAccess, room: str) -> set[str]:
    """Who livekit-server says is in ``room`` (nobody once the room is gone)."""
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        try:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError as err:
            if err.status == 404:
                return set()
            raise
    return {p.identity for p in listed.participants}


async def wait_presence(
    livekit: LiveKitAccess, room: str, identity: str, present: bool, timeout: float = WAIT
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (identity in await participants(livekit, room)) != present:
        if loop.time() > deadline:
            raise AssertionError(f"{identity} {'never joined' if present else 'never left'} room {room}")
        await asyncio.sleep(0.2)


def start(session: Session, request: pb.StartJobRequest) -> None:
    session.send(pb.SupervisorMessage(start_job=request))


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def runners(tmp_path: Path) -> AsyncIterator[Callable[..., RunnerProcess]]:
    made = Runners(tmp_path)

    def make(port: int, entrypoint: str, env: dict[str, str] | None = None) -> RunnerProcess:
        return made.make(port, f"{AGENTS}:{entrypoint}", env)

    yield make
    await made.close()


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    c = Caller()
    yield c
    with contextlib.suppress(Exception):
        await c.leave()


def room_name() -> str:
    return f"runner-{uuid.uuid4().hex[:8]}"


async def started(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    entrypoint: str,
    env: dict[str, str] | None = None,
    room: str | None = None,
) -> tuple[RunnerProcess, Session, lk_agent.Job]:
    """A runner attached and running ``entrypoint`` in a room (StartJobResponse received)."""
    runner = runners(supervisor.port, entrypoint, env)
    await runner.start()
    session = await supervisor.servicer.session()
    request, job = start_request(livekit, room or room_name())
    start(session, request)
    response = await session.expect("start_job_response")
    assert response.job_id == job.id
    assert response.error == "", runner.output()
    return runner, session, job


async def started_with_caller(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
    entrypoint: str,
    env: dict[str, str] | None = None,
) -> tuple[str, RunnerProcess, Session, lk_agent.Job]:
    """``started`` in a new room the caller joined first; the room's name too."""
    room = room_name()
    await caller.join(livekit, room)
    runner, session, job = await started(supervisor, runners, livekit, entrypoint, env, room=room)
    return room, runner, session, job


def room_token_of(session: Session) -> str:
    """The room token the session sent in its StartJobRequest."""
    sent: list[str] = session.start_tokens
    assert sent
    return sent[0]


def assert_secrets_kept(runner: RunnerProcess, session: Session, room_token: str) -> None:
    """Neither the room token nor the runner credential shows in the pod log or forwarded records."""
    forwarded = "\n".join(f"{r.message} {r.exception} {' '.join(r.extra.values())}" for r in session.logs())
    for secret in (room_token, CREDENTIAL):
        assert secret not in runner.output()
        assert secret not in forwarded


def subscribed_to(kind: str) -> Callable[[pb.LogRecord], bool]:
    def match(record: pb.LogRecord) -> bool:
        return record.message == "subscribed" and record.extra["kind"] == kind

    return match


def job_states(session: Session) -> list[str]:
    return [pb.JobState.Name(m.job_status.state) for m in session.of("job_status")]


def assert_clean_exit(runner: RunnerProcess) -> None:
    out = runner.output()
    assert "Task was destroyed but it is pending" not in out, out
    assert "Traceback" not in out or "boom from the entrypoint" in out or "ValueError" in out, out


# ------------------------------------------------------------------------------------ tests


async def test_hello_then_idle_until_start_and_pongs(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner = runners(supervisor.port, "wait_forever")
    await runner.start()
    session = await supervisor.servicer.session()

    hello = session.hello
    assert hello.protocol_version == PROTOCOL_VERSION
    assert (hello.pod_namespace, hello.pod_name, hello.pod_uid) == (
        "runner-tests",
        runner.pod_name,
        runner.pod_uid,
    )
    assert hello.credential == CREDENTIAL
    assert hello.state == pb.RUNNER_STATE_IDLE
    assert not hello.HasField("running_job")
    assert hello.runner_version

    # idle: pings are answered, nothing about a job is said, the process stays up
    await asyncio.sleep(3)
    assert runner.running
    pongs = [m.pong for m in session.of("pong")]
    assert len(pongs) >= 3
    for pong in pongs:
        assert pong.ping_timestamp_us in session.pings_sent
        assert pong.timestamp_us >= pong.ping_timestamp_us
    assert not session.of("start_job_response")
    assert not session.of("job_status")

    # idle + SIGTERM: exit 0 at once
    runner.signal(signal.SIGTERM)
    assert await runner.wait(15) == 0
    assert_clean_exit(runner)


async def test_shutdown_request_while_idle(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess]
) -> None:
    runner = runners(supervisor.port, "wait_forever")
    await runner.start()
    session = await supervisor.servicer.session()
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="pool shrinking", grace_ms=5000)))
    response = await session.expect("shutdown_response")
    assert response.job_id == ""
    assert await runner.wait(15) == 0
    assert not session.of("job_status")
    assert_clean_exit(runner)


async def test_refused_attach_is_retried_with_backoff_and_a_fresh_token(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess]
) -> None:
    servicer = supervisor.servicer
    servicer.refuse = [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED] * 2
    runner = runners(supervisor.port, "wait_forever")
    await runner.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(servicer.refused) < 2:
        assert loop.time() < deadline, runner.output()
        await asyncio.sleep(0.05)
    # the kubelet rotates the projected token: the next Hello must carry the new one
    runner.token_path.write_text("rotated-credential\n")
    session = await servicer.session()
    assert len(servicer.refused) == 4
    assert session.hello.credential == "rotated-credential"
    assert [hello.credential for _, hello in servicer.refused[:2]] == [CREDENTIAL] * 2
    times = [t for t, _ in servicer.refused]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.04 for gap in gaps), gaps  # backoff, not a busy loop
    assert gaps[-1] > gaps[0]
    out = runner.output()
    assert "UNAUTHENTICATED" in out
    assert "PERMISSION_DENIED" in out
    assert "rotated-credential" not in out
    assert CREDENTIAL not in out
    runner.signal(signal.SIGTERM)
    assert await runner.wait(15) == 0


async def test_silent_operator_stream_is_replaced(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess]
) -> None:
    supervisor.servicer.pinging = False
    runner = runners(supervisor.port, "wait_forever")
    await runner.start()
    first = await supervisor.servicer.session()
    assert not first.of("pong")
    supervisor.servicer.pinging = True
    # silent for max(10 ping intervals, 15s): the runner gives up on the stream and re-attaches
    second = await supervisor.servicer.session(1, timeout=15 + WAIT)
    await first.wait_ended()
    assert second.hello.state == pb.RUNNER_STATE_IDLE
    await second.expect("pong")
    await second.expect_log("detached from the operator")
    assert "nothing from the operator for" in runner.output()
    runner.signal(signal.SIGTERM)
    assert await runner.wait(15) == 0


async def test_tls_channel(tmp_path: Path, runners: Callable[..., RunnerProcess]) -> None:
    ca = LocalCA(tmp_path / "pki")
    pair = ca.issue("operator", "agent-operator", hosts=("127.0.0.1",), server=True)
    credentials = grpc.ssl_server_credentials([(pair.key.read_bytes(), pair.cert.read_bytes())])
    server = SupervisorServer(credentials)
    await server.start()
    try:
        runner = runners(server.port, "wait_forever", {"AGENT_OPERATOR_TLS_CA": str(ca.cert_path)})
        await runner.start()
        session = await server.servicer.session()
        assert session.hello.credential == CREDENTIAL
        await session.expect("pong")

        # a runner that does not trust the operator's CA never says Hello
        other = LocalCA(tmp_path / "other-pki")
        stranger = runners(server.port, "wait_forever", {"AGENT_OPERATOR_TLS_CA": str(other.cert_path)})
        await stranger.start()
        # its failed attempt is what is waited for (a fixed 3 s was not enough on a loaded machine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while "could not attach to the operator" not in stranger.output():
            assert loop.time() < deadline, stranger.output()
            await asyncio.sleep(0.1)
        assert len(server.servicer.sessions) == 1
        for r in (runner, stranger):
            r.signal(signal.SIGTERM)
            assert await r.wait(15) == 0
    finally:
        await server.stop()


async def test_job_joins_room_and_publishes_then_shutdown_request(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    room, runner, session, job = await started_with_caller(
        supervisor, runners, livekit, caller, "publish_and_wait"
    )
    agent = f"agent-{job.id}"

    # the second participant sees the agent join, receives its data and its audio track
    await caller.next_from(caller.joined, lambda identity: identity == agent)
    _, payload = await caller.next_from(caller.data, lambda item: item[0] == agent)
    assert payload == b"hello from the agent"
    await caller.next_from(caller.subscribed, lambda item: item == (agent, rtc.TrackKind.KIND_AUDIO))

    # the entrypoint saw the job and the accepted participant through its JobContext
    started_log = await session.expect_log("entrypoint started")
    assert started_log.logger == "tests.agents.simple"
    assert started_log.level == pb.LOG_LEVEL_INFO
    assert started_log.extra["job_id"] == job.id
    assert started_log.extra["room_name"] == room
    assert started_log.extra["agent_identity"] == agent
    assert started_log.extra["p_identity"] == agent
    assert started_log.extra["p_name"] == "Test Agent"
    assert started_log.extra["p_metadata"] == '{"purpose": "test"}'
    assert started_log.extra["p_attributes"] == "role=agent,tier=test"
    assert started_log.extra["url"] == livekit.url

    # pongs keep coming while the entrypoint runs
    before = len(session.of("pong"))
    await asyncio.sleep(2)
    assert len(session.of("pong")) >= before + 2

    # a second job is refused; the first one goes on
    second, _ = start_request(livekit, room_name())
    start(session, second)
    refusal = await session.expect("start_job_response", lambda r: r.error != "")
    assert "already running job" in refusal.error
    assert runner.running

    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="draining", grace_ms=15_000)))
    response = await session.expect("shutdown_response")
    assert response.job_id == job.id
    assert await runner.wait(30) == 0
    await session.expect_log("shutdown callback ran")
    assert (await session.expect_log("shutdown callback ran")).extra["shutdown_reason"] == "draining"
    assert job_states(session) == [
        "JOB_STATE_CONNECTING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SHUTTING_DOWN",
        "JOB_STATE_SUCCEEDED",
    ]
    assert not session.of("user_exit")
    await caller.next_from(caller.left, lambda identity: identity == agent)
    await session.wait_ended()
    assert_secrets_kept(runner, session, room_token_of(session))
    assert_clean_exit(runner)


@pytest.mark.parametrize(
    ("entrypoint", "reason"),
    [("shutdown_after_publish", "the agent is done"), ("return_after_publish", "entrypoint returned")],
)
async def test_user_exit(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
    entrypoint: str,
    reason: str,
) -> None:
    room, runner, session, job = await started_with_caller(supervisor, runners, livekit, caller, entrypoint)
    agent = f"agent-{job.id}"
    sender, _ = await caller.next_from(caller.data, lambda item: item[1] == b"bye from the agent")
    assert sender in (agent, "")

    user_exit = await session.expect("user_exit")
    assert (user_exit.job_id, user_exit.reason) == (job.id, reason)
    assert await runner.wait(30) == 0
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)
    assert "JOB_STATE_FAILED" not in job_states(session)
    await wait_presence(livekit, room, agent, present=False)
    await session.wait_ended()  # the runner closed the stream
    assert_clean_exit(runner)


async def test_entrypoint_raises(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner, session, job = await started(supervisor, runners, livekit, "raises")
    status = await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_FAILED)
    assert status.job_id == job.id
    assert "boom from the entrypoint" in status.error
    assert await runner.wait(30) == 1
    failure = await session.expect_log("the entrypoint failed")
    assert failure.level == pb.LOG_LEVEL_ERROR
    assert "RuntimeError: boom from the entrypoint" in failure.exception
    assert "Traceback" in failure.exception
    assert not session.of("user_exit")
    assert "JOB_STATE_SUCCEEDED" not in job_states(session)
    assert "boom from the entrypoint" in runner.output()


@pytest.mark.parametrize(
    ("entrypoint", "error"),
    [
        ("not_async", "is not an async function"),
        ("no_such_function", "has no attribute"),
    ],
)
async def test_bad_entrypoint(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    entrypoint: str,
    error: str,
) -> None:
    runner = runners(supervisor.port, entrypoint)
    await runner.start()
    session = await supervisor.servicer.session()
    # a bad entrypoint is said in the Hello (the operator counts no idle pod), and a job sent
    # anyway is refused with it
    assert session.hello.state == pb.RUNNER_STATE_PREWARM_FAILED
    assert error in session.hello.prewarm_error
    request, job = start_request(livekit, room_name())
    start(session, request)
    response = await session.expect("start_job_response")
    assert response.job_id == job.id
    assert error in response.error
    status = await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_FAILED)
    assert error in status.error
    assert await runner.wait(30) == 1
    assert_clean_exit(runner)


async def test_unimportable_entrypoint(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner = runners(supervisor.port, "x", {"AGENT_ENTRYPOINT": "tests.agents.does_not_exist:entrypoint"})
    await runner.start()
    session = await supervisor.servicer.session()
    assert session.hello.state == pb.RUNNER_STATE_PREWARM_FAILED
    assert "cannot import tests.agents.does_not_exist" in session.hello.prewarm_error
    request, _ = start_request(livekit, room_name())
    start(session, request)
    response = await session.expect("start_job_response")
    assert "cannot import tests.agents.does_not_exist" in response.error
    assert await runner.wait(30) == 1


async def test_room_join_failure(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner = runners(supervisor.port, "wait_forever")
    await runner.start()
    session = await supervisor.servicer.session()
    request, job = start_request(livekit, room_name())
    request.token = "not-a-valid-token"
    start(session, request)
    response = await session.expect("start_job_response")
    assert response.job_id == job.id
    assert "could not join the room" in response.error
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_FAILED)
    assert await runner.wait(30) == 1
    assert "not-a-valid-token" not in runner.output()


async def test_sigterm_mid_job(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    room = room_name()
    runner, session, job = await started(
        supervisor, runners, livekit, "slow_to_cancel", {"AGENT_SHUTDOWN_TIMEOUT_SECONDS": "10"}, room=room
    )
    await wait_presence(livekit, room, f"agent-{job.id}", present=True)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    runner.signal(signal.SIGTERM)
    assert await runner.wait(30) == 0
    assert loop.time() - t0 < 10 + 5
    await session.expect_log("cleanup done")  # the entrypoint's own cleanup ran to its end
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)
    assert (await session.expect("shutdown_response")).job_id == job.id
    await wait_presence(livekit, room, f"agent-{job.id}", present=False)
    assert_clean_exit(runner)


async def test_sigterm_with_entrypoint_ignoring_cancellation(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner, session, _ = await started(
        supervisor, runners, livekit, "ignores_cancellation", {"AGENT_SHUTDOWN_TIMEOUT_SECONDS": "3"}
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    runner.signal(signal.SIGTERM)
    assert await runner.wait(30) == 0
    elapsed = loop.time() - t0
    assert 2.0 < elapsed < 3 + 5, elapsed
    assert "ignoring cancellation" in runner.output()
    assert "gave up waiting" in runner.output()
    # the last messages still went out before the process left its stuck task behind
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)


async def test_room_deleted_ends_the_job(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    room = room_name()
    runner, session, job = await started(supervisor, runners, livekit, "wait_forever", room=room)
    await session.expect_log("entrypoint started")
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    user_exit = await session.expect("user_exit")
    assert (user_exit.job_id, user_exit.reason) == (job.id, "room disconnected")
    assert await runner.wait(30) == 0
    await session.expect("job_status", lambda s: s.state == pb.JOB_STATE_SUCCEEDED)
    assert_clean_exit(runner)


async def test_reattach_keeps_the_job_running(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    room, runner, first, job = await started_with_caller(
        supervisor, runners, livekit, caller, "publish_and_wait"
    )
    agent = f"agent-{job.id}"
    await caller.next_from(caller.data, lambda item: item[0] == agent)

    await supervisor.stop()
    await first.wait_ended()
    await asyncio.sleep(4)  # the operator is away; the job goes on in the room
    assert runner.running
    while not caller.data.empty():
        caller.data.get_nowait()
    await caller.next_from(caller.data, lambda item: item[0] == agent)

    await supervisor.start()  # same port
    second = await supervisor.servicer.session(1)
    hello = second.hello
    assert hello.state == pb.RUNNER_STATE_RUNNING
    assert hello.running_job.job_id == job.id
    assert hello.running_job.room_name == room
    assert hello.running_job.started_at_unix_ms > 0
    reparsed = lk_agent.Job()
    reparsed.ParseFromString(hello.running_job.job)
    assert reparsed == job
    assert hello.credential == CREDENTIAL
    # the new stream works both ways: pongs, and the logs kept while detached
    await second.expect("pong")
    await second.expect_log("detached from the operator")
    assert runner.running

    second.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="done", grace_ms=10_000)))
    assert (await second.expect("shutdown_response")).job_id == job.id
    assert await runner.wait(30) == 0
    assert_clean_exit(runner)


async def test_reattach_window_exceeded(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
) -> None:
    _, runner, session, job = await started_with_caller(
        supervisor,
        runners,
        livekit,
        caller,
        "publish_and_wait",
        {"AGENT_REATTACH_WINDOW_SECONDS": "3", "AGENT_SHUTDOWN_TIMEOUT_SECONDS": "5"},
    )
    await caller.next_from(caller.joined, lambda identity: identity == f"agent-{job.id}")
    await supervisor.stop()
    await session.wait_ended()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await runner.wait(40) == 4
    assert loop.time() - t0 >= 2.5
    out = runner.output()
    assert "could not re-attach to the operator within 3s" in out
    assert "shutdown callback ran" in out  # wound down as for a shutdown request
    await caller.next_from(caller.left, lambda identity: identity == f"agent-{job.id}")
    assert_clean_exit(runner)


async def test_log_records_arrive(
    supervisor: SupervisorServer, runners: Callable[..., RunnerProcess], livekit: LiveKitAccess
) -> None:
    runner, session, _ = await started(supervisor, runners, livekit, "chatty", {"AGENT_LOG_LEVEL": "DEBUG"})
    await session.expect_log("chatty done")

    extras = await session.expect_log("record with extras")
    assert extras.extra["answer"] == "42"
    assert extras.extra["who"] == "agent"
    assert extras.timestamp_us > 0

    with_exc = await session.expect_log("record with an exception")
    assert with_exc.level == pb.LOG_LEVEL_ERROR
    assert "ValueError: an exception to format" in with_exc.exception

    huge = await session.expect_log("huge record")
    assert huge.level == pb.LOG_LEVEL_WARNING
    assert huge.ByteSize() <= MAX_MESSAGE_BYTES
    assert huge.message.endswith("[truncated]")

    debug = await session.expect_log("a debug record from the entrypoint")
    assert debug.level == pb.LOG_LEVEL_DEBUG
    # the runner's own records came too; internal libraries' DEBUG chatter did not
    await session.expect_log("attached to the operator")
    assert not [r for r in session.logs() if r.logger.startswith("grpc") and r.level == pb.LOG_LEVEL_DEBUG]
    assert "internal debug chatter" in runner.output()  # still in the pod log
    assert_secrets_kept(runner, session, room_token_of(session))  # DEBUG level included

    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="done", grace_ms=10_000)))
    assert await runner.wait(30) == 0


@pytest.mark.parametrize(
    ("mode", "want"),
    [
        (pb.AUTO_SUBSCRIBE_ALL, {"audio", "video"}),
        (pb.AUTO_SUBSCRIBE_AUDIO_ONLY, {"audio"}),
        (pb.AUTO_SUBSCRIBE_VIDEO_ONLY, {"video"}),
        (pb.AUTO_SUBSCRIBE_NONE, set()),
    ],
)
async def test_auto_subscribe(
    supervisor: SupervisorServer,
    runners: Callable[..., RunnerProcess],
    livekit: LiveKitAccess,
    caller: Caller,
    mode: pb.AutoSubscribe.ValueType,
    want: set[str],
) -> None:
    room = room_name()
    await caller.join(livekit, room)
    # the caller publishes audio before the agent comes, video after it is in the room
    audio = rtc.AudioSource(48_000, 1)
    await caller.room.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("caller-audio", audio),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    runner = runners(supervisor.port, "report_subscriptions")
    await runner.start()
    session = await supervisor.servicer.session()
    request, _ = start_request(livekit, room, auto_subscribe=mode)
    start(session, request)
    assert (await session.expect("start_job_response")).error == ""
    await session.expect_log("entrypoint started")
    video = rtc.VideoSource(64, 64)
    await caller.room.local_participant.publish_track(
        rtc.LocalVideoTrack.create_video_track("caller-video", video),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA),
    )
    frame = rtc.VideoFrame(64, 64, rtc.VideoBufferType.RGBA, bytes(64 * 64 * 4))
    for _ in range(30):  # a few frames so the video track flows
        video.capture_frame(frame)
        await asyncio.sleep(0.05)
    for kind in want:
        await session.expect("log", subscribed_to(kind))
    await asyncio.sleep(2)  # and nothing else arrives
    got = {r.extra["kind"] for r in session.logs() if r.message == "subscribed"}
    assert got == want
    session.send(pb.SupervisorMessage(shutdown=pb.ShutdownRequest(reason="done", grace_ms=10_000)))
    assert await runner.wait(30) == 0
    await audio.aclose()
