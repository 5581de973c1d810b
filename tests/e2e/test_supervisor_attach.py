"""Who may attach to the supervisor: real gRPC on loopback, real TokenReview, scripted runners.

Each refusal is checked for its status code and its metric, and for leaving the other
sessions alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client
from livekit.protocol import agent as lk_agent
from livekit.protocol import models as lk_models

from agent_jobrunner.protocol import ATTACH_METHOD, PROTOCOL_VERSION, now_us, pb, pb_grpc
from agent_operator.kube.tokenreview import TokenReviewAuthenticator
from agent_operator.supervisor import (
    HeartbeatSettings,
    NotServingRunners,
    PodIdentity,
    RunnerBinding,
    Supervisor,
    SupervisorSettings,
)
from agent_operator.supervisor.types import Resolver
from devenv.procs import free_port
from tests.support.supervision import (
    ObservedTerminator,
    RecordingListener,
    binding_for,
    failures,
    idle_hello,
    parked_pod,
    pod_token,
)

pytestmark = pytest.mark.e2e


class ScriptedRunner:
    """A gRPC client that speaks the runner protocol step by step."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call: Any = pb_grpc.RunnerSupervisorStub(self.channel).Attach()
        self.pong_delay = 0.0
        self.answering = True
        self._ponger: asyncio.Task[None] | None = None
        self.received: list[pb.SupervisorMessage] = []

    async def hello(self, pod: Any, credential: str, **overrides: Any) -> pb.SupervisorMessage | Any:
        hello = idle_hello(pod, credential)
        for key, value in overrides.items():
            setattr(hello, key, value)
        await self.call.write(pb.RunnerMessage(hello=hello))
        return await self.read()

    async def read(self) -> Any:
        """The next message, or EOF once the server ended the stream (with any status)."""
        try:
            return await self.call.read()
        except grpc.aio.AioRpcError:
            return grpc.aio.EOF

    def answer_pings(self) -> None:
        async def loop() -> None:
            while True:
                msg = await self.read()
                if msg is grpc.aio.EOF:
                    return
                self.received.append(msg)
                if msg.WhichOneof("message") == "ping" and self.answering:
                    if self.pong_delay:
                        await asyncio.sleep(self.pong_delay)
                    await self.call.write(
                        pb.RunnerMessage(
                            pong=pb.Pong(ping_timestamp_us=msg.ping.timestamp_us, timestamp_us=now_us())
                        )
                    )

        self._ponger = asyncio.create_task(loop())

    def pings(self) -> int:
        return sum(1 for m in self.received if m.WhichOneof("message") == "ping")

    async def status(self) -> tuple[grpc.StatusCode, str]:
        return await self.call.code(), await self.call.details()

    async def close(self) -> None:
        if self._ponger is not None:
            self._ponger.cancel()
            with contextlib.suppress(BaseException):
                await self._ponger
        self.call.cancel()
        await self.channel.close()


@pytest.fixture
async def make_supervisor(
    k8s: client.ApiClient,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Supervisor] = []

    async def make(
        resolver: Resolver | None = None, **settings: Any
    ) -> tuple[Supervisor, int, RecordingListener, ObservedTerminator]:
        listener = RecordingListener()
        terminator = ObservedTerminator(k8s)
        sup = Supervisor(
            TokenReviewAuthenticator(k8s),
            terminator,
            listener,
            SupervisorSettings(**settings),
            resolver=resolver,
        )
        port = await sup.start("127.0.0.1:0")
        started.append(sup)
        return sup, port, listener, terminator

    yield make
    for sup in started:
        await sup.stop()


@pytest.fixture
def core(k8s: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


async def test_expected_pod_with_its_token_attaches_and_is_pinged(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    sup, port, listener, _ = await make_supervisor()
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod, HeartbeatSettings(ping_interval=0.2, ping_timeout=30)))
    runner = ScriptedRunner(port)
    try:
        welcome = await runner.hello(pod, await pod_token(core, pod))
        assert welcome.WhichOneof("message") == "welcome"
        assert welcome.welcome.protocol_version == PROTOCOL_VERSION
        assert welcome.welcome.ping_interval_ms == 200
        runner.answer_pings()
        await listener.wait_for("attached")
        await asyncio.sleep(1.0)
        assert runner.pings() >= 3
        assert sup.attached(pod.metadata.uid)
        assert [b.pod.uid for b in sup.idle_runners()] == [pod.metadata.uid]
    finally:
        await runner.close()


async def test_bad_credential_is_unauthenticated(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    sup, port, _, _ = await make_supervisor()
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod))
    before = failures("auth")
    runner = ScriptedRunner(port)
    try:
        assert await runner.hello(pod, "not-a-token") is grpc.aio.EOF
        code, details = await runner.status()
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "refused" in details
        assert failures("auth") == before + 1
    finally:
        await runner.close()


async def test_token_for_another_audience_is_refused(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    sup, port, _, _ = await make_supervisor()
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod))
    runner = ScriptedRunner(port)
    try:
        token = await pod_token(core, pod, audience="https://kubernetes.default.svc.cluster.local")
        assert await runner.hello(pod, token) is grpc.aio.EOF
        code, _ = await runner.status()
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await runner.close()


async def test_pod_cannot_attach_as_another_pod(
    make_supervisor: Callable[..., Any],
    core: client.CoreV1Api,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, port, _, _ = await make_supervisor()
    victim = await parked_pod(core, namespace, "victim")
    thief = await parked_pod(core, namespace, "thief")
    sup.expect(binding_for(victim))
    sup.expect(binding_for(thief))
    before = failures("auth")
    runner = ScriptedRunner(port)
    try:
        # the thief's own valid token, claiming to be the victim
        with caplog.at_level(logging.WARNING, "agent_operator.supervisor"):
            assert await runner.hello(victim, await pod_token(core, thief)) is grpc.aio.EOF
        code, details = await runner.status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to pod" in details
        assert failures("auth") == before + 1
        assert any("attach refused" in r.getMessage() for r in caplog.records)
        assert not sup.attached(victim.metadata.uid)
    finally:
        await runner.close()


async def handing_over(pod: PodIdentity) -> RunnerBinding | None:
    raise NotServingRunners("this operator is handing over; the next one takes new runners")


# a valid pod the operator does not know is refused for good (PERMISSION_DENIED); while it
# hands over, a leaving operator takes no new runners: UNAVAILABLE (retry, and reach the next
# operator), counted apart
@pytest.mark.parametrize(
    ("resolver", "code", "details", "reason"),
    [
        (None, grpc.StatusCode.PERMISSION_DENIED, "not a runner pod", "unknown_pod"),
        (handing_over, grpc.StatusCode.UNAVAILABLE, "handing over", "handover"),
    ],
    ids=["unknown", "handover"],
)
async def test_valid_pod_unknown_to_the_operator_is_turned_away(
    resolver: Resolver | None,
    code: grpc.StatusCode,
    details: str,
    reason: str,
    make_supervisor: Callable[..., Any],
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    _, port, _, _ = await make_supervisor(resolver=resolver)
    pod = await parked_pod(core, namespace)
    before = {r: failures(r) for r in ("unknown_pod", "handover")}
    runner = ScriptedRunner(port)
    try:
        assert await runner.hello(pod, await pod_token(core, pod)) is grpc.aio.EOF
        got_code, got_details = await runner.status()
        assert got_code == code
        assert details in got_details
        assert {r: failures(r) - n for r, n in before.items()} == {
            r: (1 if r == reason else 0) for r in before
        }
    finally:
        await runner.close()


async def test_protocol_violations_are_refused(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    sup, port, _, _ = await make_supervisor(hello_timeout=1.0)
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod))
    token = await pod_token(core, pod)

    # first message is not Hello
    runner = ScriptedRunner(port)
    await runner.call.write(pb.RunnerMessage(pong=pb.Pong(ping_timestamp_us=1)))
    assert await runner.read() is grpc.aio.EOF
    assert (await runner.status())[0] == grpc.StatusCode.INVALID_ARGUMENT
    await runner.close()

    # wrong protocol version
    runner = ScriptedRunner(port)
    assert await runner.hello(pod, token, protocol_version=99) is grpc.aio.EOF
    code, details = await runner.status()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol version 99" in details
    await runner.close()

    # silence: no Hello within hello_timeout
    runner = ScriptedRunner(port)
    assert await asyncio.wait_for(runner.read(), 10) is grpc.aio.EOF
    assert (await runner.status())[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    await runner.close()


async def test_garbage_and_oversized_frames_do_not_hurt_other_sessions(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    sup, port, _, _ = await make_supervisor()
    good_pod, big_pod = await parked_pod(core, namespace), await parked_pod(core, namespace)
    sup.expect(binding_for(good_pod, HeartbeatSettings(ping_interval=0.2, ping_timeout=30)))
    sup.expect(binding_for(big_pod))
    good = ScriptedRunner(port)
    assert (await good.hello(good_pod, await pod_token(core, good_pod))).WhichOneof("message") == "welcome"
    good.answer_pings()

    # raw bytes that are not a RunnerMessage
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    raw = channel.stream_stream(
        ATTACH_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    call = raw()
    before = failures("protocol")
    await call.write(b"\xff\xff\xff\xff\x0fthis is not protobuf")
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in call:
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Wire format was corrupt" in (refused.value.details() or "")
    assert failures("protocol") == before + 1

    # a 2 MiB log record after a valid attach: over the 1 MiB limit
    big = ScriptedRunner(port)
    assert (await big.hello(big_pod, await pod_token(core, big_pod))).WhichOneof("message") == "welcome"
    await big.call.write(pb.RunnerMessage(log=pb.LogRecord(message="x" * (2 * 1024 * 1024))))
    while (msg := await big.read()) is not grpc.aio.EOF:
        assert msg.WhichOneof("message") == "ping"
    assert (await big.status())[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    await big.close()
    await channel.close()

    # the well-behaved session never noticed
    seen = good.pings()
    await asyncio.sleep(1.0)
    assert good.pings() >= seen + 3
    assert sup.attached(good_pod.metadata.uid)
    await good.close()


async def test_slow_pong_warns_and_silence_deletes_the_pod(
    make_supervisor: Callable[..., Any],
    core: client.CoreV1Api,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, port, listener, terminator = await make_supervisor()
    pod = await parked_pod(core, namespace)
    sup.expect(
        binding_for(pod, HeartbeatSettings(ping_interval=0.3, ping_timeout=2.0, high_ping_threshold=0.1))
    )
    runner = ScriptedRunner(port)
    try:
        await runner.hello(pod, await pod_token(core, pod))
        runner.pong_delay = 0.25
        runner.answer_pings()
        with caplog.at_level(logging.WARNING, "agent_operator.supervisor"):
            await asyncio.sleep(1.5)
        assert any("high ping" in r.getMessage() for r in caplog.records)
        assert not terminator.calls

        runner.answering = False
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(terminator.called.wait(), 15)
        elapsed = terminator.calls[0][2] - t0
        assert terminator.calls[0][0].uid == pod.metadata.uid
        assert "unresponsive" in terminator.calls[0][1]
        # within ping timeout + one ping interval (+ scheduling slack), not before the timeout
        assert 1.5 <= elapsed <= 2.0 + 0.3 + 2.0, elapsed

        async def pod_gone() -> bool:
            try:
                await core.read_namespaced_pod(pod.metadata.name, namespace)
            except client.exceptions.ApiException as exc:
                return bool(exc.status == 404)
            return False

        for _ in range(100):
            if await pod_gone():
                break
            await asyncio.sleep(0.1)
        assert await pod_gone()
        await listener.wait_for("detached")
    finally:
        await runner.close()


async def test_tokenreview_unreachable_is_unavailable_not_a_refusal(
    k8s: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    """A valid runner during an API server outage: told to come back (UNAVAILABLE), and not
    counted as an authentication failure (that metric means forged or foreign tokens)."""
    pod = await parked_pod(core, namespace)
    token = await pod_token(core, pod)
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"  # the API server, gone: connection refused
    async with client.ApiClient(config) as away:
        sup = Supervisor(TokenReviewAuthenticator(away), ObservedTerminator(k8s), RecordingListener())
        port = await sup.start("127.0.0.1:0")
        sup.expect(binding_for(pod))
        auth_before, unavailable_before = failures("auth"), failures("auth_unavailable")
        runner = ScriptedRunner(port)
        try:
            assert await runner.hello(pod, token) is grpc.aio.EOF
            code, details = await runner.status()
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "try again" in details
            assert token not in details
            assert failures("auth_unavailable") == unavailable_before + 1
            assert failures("auth") == auth_before
        finally:
            await runner.close()
            await sup.stop()


async def test_replayed_token_cannot_take_over_an_answering_session(
    make_supervisor: Callable[..., Any],
    core: client.CoreV1Api,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 14, defect 10: a copy of a pod's token used to replace the pod's live stream and
    receive its next StartJobRequest, room token included."""
    sup, port, _, _ = await make_supervisor()
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod, HeartbeatSettings(ping_interval=0.3, ping_timeout=30)))
    token = await pod_token(core, pod)
    runner, thief = ScriptedRunner(port), ScriptedRunner(port)
    try:
        assert (await runner.hello(pod, token)).WhichOneof("message") == "welcome"
        runner.answer_pings()
        before = failures("duplicate_session")
        with caplog.at_level(logging.DEBUG, "agent_operator.supervisor"):
            assert await thief.hello(pod, token) is grpc.aio.EOF
        code, details = await thief.status()
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert "answers" in details
        assert failures("duplicate_session") == before + 1
        refusals = [r for r in caplog.records if "attach refused (duplicate_session)" in r.getMessage()]
        assert refusals
        assert token not in caplog.text
        assert sup.attached(pod.metadata.uid)

        # the job goes to the runner's own stream
        job = lk_agent.Job(id="AJ_takeover", room=lk_models.Room(name="r"))
        await sup.assign(pod.metadata.uid, pb.StartJobRequest(job=job.SerializeToString(), token="room-jwt"))
        for _ in range(400):  # up to 20 s on a busy machine
            if any(m.WhichOneof("message") == "start_job" for m in runner.received):
                break
            await asyncio.sleep(0.05)
        assert any(m.WhichOneof("message") == "start_job" for m in runner.received)

        # once the first stream stops answering, a new stream takes over (a runner whose
        # network dropped under it must not wait for the ping timeout)
        runner.answering = False
        successor = ScriptedRunner(port)
        t0 = asyncio.get_running_loop().time()
        welcome = await successor.hello(pod, token)
        assert welcome is not grpc.aio.EOF, await successor.status()
        assert welcome.WhichOneof("message") == "welcome"
        assert asyncio.get_running_loop().time() - t0 < 10
        assert (await runner.status())[0] == grpc.StatusCode.ABORTED
        # the job was not started yet: the runner's new stream gets its request again
        resent = await successor.read()
        while resent.WhichOneof("message") == "ping":
            resent = await successor.read()
        assert resent.WhichOneof("message") == "start_job"
        await successor.close()
    finally:
        await runner.close()
        await thief.close()


async def test_reattaching_runner_must_claim_the_job_its_pod_is_labelled_with(
    make_supervisor: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    """Issue 14, defect 9: after a restart a runner's word was taken for which job it runs."""
    sup, port, listener, _ = await make_supervisor()
    pod = await parked_pod(core, namespace)
    binding = binding_for(pod)
    sup.expect(dataclasses.replace(binding, job_id="AJ_labelled"))
    token = await pod_token(core, pod)

    async def reattach(job_id: str) -> tuple[ScriptedRunner, Any]:
        runner = ScriptedRunner(port)
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            pod_namespace=namespace,
            pod_name=pod.metadata.name,
            pod_uid=pod.metadata.uid,
            credential=token,
            state=pb.RUNNER_STATE_RUNNING,
            running_job=pb.RunningJob(job_id=job_id, room_name="r"),
        )
        await runner.call.write(pb.RunnerMessage(hello=hello))
        return runner, await runner.read()

    before = failures("protocol")
    runner, answer = await reattach("AJ_other")
    assert answer is grpc.aio.EOF
    code, details = await runner.status()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "labelled with job AJ_labelled" in details
    assert failures("protocol") == before + 1
    assert sup.job(pod.metadata.uid) is None
    await runner.close()

    runner, answer = await reattach("AJ_labelled")
    assert answer.WhichOneof("message") == "welcome"
    adopted = await listener.wait_for("adopted")
    assert adopted.detail.job_id == "AJ_labelled"
    await runner.close()
