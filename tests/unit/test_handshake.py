"""The attach handshake's chain of checks, each refusing with its code and reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb
from agent_operator.supervisor import handshake
from agent_operator.supervisor.types import (
    AuthError,
    DeploymentRef,
    HeartbeatSettings,
    JobRecord,
    JobState,
    PodIdentity,
    RunnerBinding,
)

pytestmark = pytest.mark.unit

POD = PodIdentity("ns", "voice-pool-1", "uid-1")
BINDING = RunnerBinding(POD, DeploymentRef("ns", "voice"), HeartbeatSettings())


class Tokens:
    async def authenticate(self, credential: str) -> PodIdentity:
        if credential == "good":
            return POD
        if credential == "other":
            return PodIdentity("ns", "someone-else", "uid-9")
        raise AuthError("token refused")


async def stream(*messages: pb.RunnerMessage) -> AsyncIterator[pb.RunnerMessage]:
    for message in messages:
        yield message


def hello(credential: str = "good", version: int = PROTOCOL_VERSION, running: str = "") -> pb.RunnerMessage:
    body = pb.Hello(
        protocol_version=version,
        pod_namespace="ns",
        pod_name=POD.name,
        pod_uid=POD.uid,
        credential=credential,
    )
    if running:
        body.state = pb.RUNNER_STATE_RUNNING
        body.running_job.job_id = running
    return pb.RunnerMessage(hello=body)


def context(known: bool = True, job: JobRecord | None = None) -> handshake.Context:
    return handshake.Context(
        hello_timeout=1.0,
        authenticator=Tokens(),
        resolver=None,
        binding_of=lambda uid: BINDING if known and uid == POD.uid else None,
        bind=lambda binding: None,
        job_of=lambda uid: job,
    )


async def check(
    *messages: pb.RunnerMessage, ctx: handshake.Context | None = None
) -> handshake.Refusal | None:
    return await handshake.run(ctx or context(), handshake.Handshake(stream(*messages), "peer"))


async def test_a_good_hello_of_a_known_pod_passes_every_check() -> None:
    hs = handshake.Handshake(stream(hello()), "peer")
    assert await handshake.run(context(), hs) is None
    assert hs.binding == BINDING


@pytest.mark.parametrize(
    ("messages", "ctx", "reason", "code"),
    [
        ((pb.RunnerMessage(pong=pb.Pong()),), None, "protocol", grpc.StatusCode.INVALID_ARGUMENT),
        ((hello(version=PROTOCOL_VERSION + 1),), None, "protocol", grpc.StatusCode.FAILED_PRECONDITION),
        ((hello("bad"),), None, "auth", grpc.StatusCode.UNAUTHENTICATED),
        ((hello("other"),), None, "auth", grpc.StatusCode.PERMISSION_DENIED),
        ((hello(),), context(known=False), "unknown_pod", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_each_check_refuses_with_its_reason_and_code(
    messages: tuple[pb.RunnerMessage, ...], ctx: handshake.Context | None, reason: str, code: grpc.StatusCode
) -> None:
    refusal = await check(*messages, ctx=ctx)
    assert refusal is not None
    assert (refusal.reason, refusal.code) == (reason, code)


async def test_a_runner_claiming_another_job_or_an_ended_one_is_refused() -> None:
    record = JobRecord("J1", "r1", BINDING, assigned_at=0.0, state=JobState.RUNNING)
    other = await check(hello(running="J2"), ctx=context(job=record))
    assert other is not None
    assert "runs job J2, but was assigned J1" in other.details
    record.state = JobState.ENDED
    ended = await check(hello(running="J1"), ctx=context(job=record))
    assert ended is not None
    assert "already ended" in ended.details
    record.state = JobState.RUNNING
    assert await check(hello(running="J1"), ctx=context(job=record)) is None


async def test_a_stream_that_ends_before_its_hello_is_refused_with_an_error() -> None:
    refusal = await check()
    assert refusal is not None
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.reason == "protocol"
