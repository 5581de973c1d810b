"""The attach handshake: a runner's first message, checked by a chain of named checks.

Each check looks at what the handshake learned so far and returns None (go on) or a
``Refusal``: the metrics reason, the gRPC status code and the details the runner is told.
The chain, in order: a Hello arrives in time, in our protocol version, with a credential
that proves a pod, the pod it claims, one this operator runs, and (re-attaching with a job)
the job its pod's signed record names and this operator knows for it. A new rule is one
more check in ``CHECKS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb
from agent_operator.supervisor.types import (
    Authenticator,
    AuthError,
    AuthUnavailable,
    JobRecord,
    JobState,
    NotServingRunners,
    PodIdentity,
    Resolver,
    RunnerBinding,
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    reason: str  # the metrics label: protocol, auth, auth_unavailable, handover, unknown_pod
    code: grpc.StatusCode
    details: str


@dataclasses.dataclass
class Handshake:
    """What one attach learned so far; the checks fill it in."""

    requests: AsyncIterator[pb.RunnerMessage]
    peer: str
    hello: pb.Hello | None = None
    claimed: PodIdentity | None = None
    proven: PodIdentity | None = None
    binding: RunnerBinding | None = None


@dataclasses.dataclass(frozen=True)
class Context:
    """What the checks may consult: the supervisor's own state and its injected parts."""

    hello_timeout: float
    authenticator: Authenticator
    resolver: Resolver | None
    binding_of: Callable[[str], RunnerBinding | None]
    bind: Callable[[RunnerBinding], object]
    job_of: Callable[[str], JobRecord | None]


Check = Callable[[Context, Handshake], Awaitable[Refusal | None]]


async def hello_in_time(ctx: Context, hs: Handshake) -> Refusal | None:
    try:
        first = await asyncio.wait_for(anext(hs.requests), timeout=ctx.hello_timeout)
    except TimeoutError:
        return Refusal("protocol", grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello in time")
    except StopAsyncIteration:
        return Refusal("protocol", grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its Hello")
    except Exception as exc:
        return Refusal("protocol", grpc.StatusCode.INVALID_ARGUMENT, f"unreadable: {exc}")
    if first.WhichOneof("message") != "hello":
        return Refusal("protocol", grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
    hs.hello = first.hello
    hs.claimed = PodIdentity(first.hello.pod_namespace, first.hello.pod_name, first.hello.pod_uid)
    return None


async def our_protocol(ctx: Context, hs: Handshake) -> Refusal | None:
    assert hs.hello is not None
    if hs.hello.protocol_version != PROTOCOL_VERSION:
        return Refusal(
            "protocol",
            grpc.StatusCode.FAILED_PRECONDITION,
            f"protocol version {hs.hello.protocol_version} is not supported (want {PROTOCOL_VERSION})",
        )
    return None


async def credential_proves_a_pod(ctx: Context, hs: Handshake) -> Refusal | None:
    assert hs.hello is not None
    try:
        hs.proven = await ctx.authenticator.authenticate(hs.hello.credential)
    except AuthError as exc:
        return Refusal("auth", grpc.StatusCode.UNAUTHENTICATED, str(exc))
    except AuthUnavailable as exc:
        return Refusal("auth_unavailable", grpc.StatusCode.UNAVAILABLE, str(exc))
    return None


async def the_pod_it_claims(ctx: Context, hs: Handshake) -> Refusal | None:
    proven, claimed = hs.proven, hs.claimed
    assert proven is not None
    assert claimed is not None
    if proven != claimed:
        return Refusal(
            "auth",
            grpc.StatusCode.PERMISSION_DENIED,
            f"credential belongs to pod {proven} ({proven.uid}), not {claimed} ({claimed.uid})",
        )
    return None


async def a_pod_of_ours(ctx: Context, hs: Handshake) -> Refusal | None:
    proven = hs.proven
    assert proven is not None
    binding = ctx.binding_of(proven.uid)
    if binding is None and ctx.resolver is not None:
        try:
            binding = await ctx.resolver(proven)
        except NotServingRunners as exc:
            return Refusal("handover", grpc.StatusCode.UNAVAILABLE, str(exc))
        if binding is not None:
            ctx.bind(binding)
    if binding is None:
        return Refusal(
            "unknown_pod",
            grpc.StatusCode.PERMISSION_DENIED,
            f"pod {proven} is not a runner pod of this operator",
        )
    hs.binding = binding
    return None


async def the_job_we_know(ctx: Context, hs: Handshake) -> Refusal | None:
    hello, binding = hs.hello, hs.binding
    assert hello is not None
    assert binding is not None
    if hello.state != pb.RUNNER_STATE_RUNNING:
        return None
    running = hello.running_job.job_id
    if binding.job_id and binding.job_id != running:  # the job the pod's signed record names
        details = (
            f"pod {binding.pod} is labelled with job {binding.job_id}, but its runner claims job {running}"
        )
        return Refusal("protocol", grpc.StatusCode.FAILED_PRECONDITION, details)
    record = ctx.job_of(binding.pod.uid)
    if record is None:
        return None
    if record.job_id != running:
        details = f"pod {binding.pod} runs job {running}, but was assigned {record.job_id}"
        return Refusal("protocol", grpc.StatusCode.FAILED_PRECONDITION, details)
    if record.state is JobState.ENDED:
        details = f"job {record.job_id} has already ended ({record.outcome})"
        return Refusal("protocol", grpc.StatusCode.FAILED_PRECONDITION, details)
    return None


CHECKS: tuple[Check, ...] = (
    hello_in_time,
    our_protocol,
    credential_proves_a_pod,
    the_pod_it_claims,
    a_pod_of_ours,
    the_job_we_know,
)


async def run(ctx: Context, hs: Handshake, checks: tuple[Check, ...] = CHECKS) -> Refusal | None:
    """The first refusal of the chain, or None when the runner may attach (``hs`` then has
    its hello and binding)."""
    for check in checks:
        refusal = await check(ctx, hs)
        if refusal is not None:
            return refusal
    return None
