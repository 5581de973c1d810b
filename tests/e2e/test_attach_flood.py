"""Unauthenticated load on the runner port: real gRPC streams, real TokenReviews.

A caller that can reach the port but proves nothing must not hold the operator's streams
open without bound, nor turn each Hello into a TokenReview. The flood comes from 127.0.0.1;
the real runner dials the test host's veth address, so it is another peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from agent_jobrunner.protocol import pb, pb_grpc
from agent_operator.kube.tokenreview import TokenReviewAuthenticator
from agent_operator.supervisor import PodIdentity, Supervisor, SupervisorSettings
from agent_operator.supervisor.admission import AdmissionSettings
from tests.support.supervision import (
    ObservedTerminator,
    RecordingListener,
    binding_for,
    failures,
    forged_token,
    idle_hello,
    parked_pod,
    pod_token,
)

pytestmark = pytest.mark.e2e

OTHER_HOST = os.environ.get("AGENT_OPERATOR_TEST_NODE_IP", "")


class CountingReviews(TokenReviewAuthenticator):
    """The real TokenReview authenticator, counting the reviews it sends (and how many at once)."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.reviews = self.in_flight = self.peak = 0

    async def _review(self, credential: str) -> PodIdentity:
        self.reviews += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super()._review(credential)
        finally:
            self.in_flight -= 1


class Stream:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()

    async def hello(self, pod: Any, credential: str) -> None:
        await self.call.write(pb.RunnerMessage(hello=idle_hello(pod, credential)))

    async def first(self) -> Any:
        try:
            return await self.call.read()
        except grpc.aio.AioRpcError:
            return grpc.aio.EOF

    async def ended(self) -> grpc.StatusCode:
        """Wait for the server to end the stream; its status."""
        while await self.first() is not grpc.aio.EOF:
            pass
        code: grpc.StatusCode = await self.call.code()
        return code


@pytest.fixture
async def supervisor(k8s: client.ApiClient) -> AsyncIterator[tuple[Supervisor, CountingReviews, int]]:
    reviews = CountingReviews(k8s)
    sup = Supervisor(
        reviews,
        ObservedTerminator(k8s),
        RecordingListener(),
        SupervisorSettings(
            hello_timeout=20.0,
            # a refusal is remembered longer than the test runs on a busy machine
            admission=AdmissionSettings(
                max_pending=200, max_pending_per_peer=32, max_reviews=4, refused_ttl=300
            ),
        ),
    )
    # inside the test's network namespace: loopback and the test host's veth end only
    port = await sup.start("0.0.0.0:0" if OTHER_HOST else "127.0.0.1:0")
    yield sup, reviews, port
    await sup.stop()


@contextlib.asynccontextmanager
async def channel(host: str, port: int) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(f"{host}:{port}")
    try:
        yield ch
    finally:
        await ch.close()


async def test_streams_without_a_hello_are_capped_and_end_in_errors(
    supervisor: tuple[Supervisor, CountingReviews, int], k8s: client.ApiClient, namespace: str
) -> None:
    sup, _, port = supervisor
    if not OTHER_HOST:
        pytest.skip("needs the test network namespace (devenv/netns-run) for a second peer address")
    core = client.CoreV1Api(k8s)
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod))
    before = {r: failures(r) for r in ("peer_limit", "overload", "protocol")}
    async with channel("127.0.0.1", port) as flood_channel, channel(OTHER_HOST, port) as runner_channel:
        flood = [asyncio.create_task(Stream(flood_channel).ended()) for _ in range(300)]
        # the silent streams: those over the per-peer cap are refused at once (long before
        # the Hello timeout), the others held
        refused_all = asyncio.Event()

        def ended(_: object) -> None:
            if sum(t.done() for t in flood) >= 268:
                refused_all.set()

        for task in flood:
            task.add_done_callback(ended)
        await asyncio.wait_for(refused_all.wait(), 15)
        done, held = [t for t in flood if t.done()], [t for t in flood if not t.done()]
        assert len(done) == 268
        assert {t.result() for t in done} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert sup.gate.pending == 32

        # meanwhile a real runner from another address attaches
        runner = Stream(runner_channel)
        await runner.hello(pod, await pod_token(core, pod))
        welcome = await asyncio.wait_for(runner.first(), 10)
        assert welcome.WhichOneof("message") == "welcome"
        assert sup.attached(pod.metadata.uid)

        # the 32 held ones end at the Hello timeout with an error, never OK
        codes = await asyncio.wait_for(asyncio.gather(*held), 40)
        assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert sup.gate.pending == 0
        runner.call.cancel()

        # a stream that ends without a Hello is an error too (it used to end with OK)
        quitter = Stream(flood_channel)
        await quitter.call.done_writing()
        assert await asyncio.wait_for(quitter.ended(), 10) == grpc.StatusCode.INVALID_ARGUMENT
    after = {r: failures(r) - n for r, n in before.items()}
    assert after == {"peer_limit": 268, "overload": 0, "protocol": 33}


async def test_bogus_credentials_cost_few_token_reviews(
    supervisor: tuple[Supervisor, CountingReviews, int], k8s: client.ApiClient, namespace: str
) -> None:
    sup, reviews, port = supervisor
    core = client.CoreV1Api(k8s)
    pod = await parked_pod(core, namespace)
    sup.expect(binding_for(pod))
    auth_before = failures("auth")

    async def attempt(ch: grpc.aio.Channel, credential: str) -> grpc.StatusCode:
        stream = Stream(ch)
        await stream.hello(pod, credential)
        return await asyncio.wait_for(stream.ended(), 30)

    async with channel("127.0.0.1", port) as ch:
        # garbage is refused without a TokenReview
        codes = await asyncio.gather(*(attempt(ch, f"garbage-{i}") for i in range(30)))
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
        assert reviews.reviews == 0

        # one forged token (the right shape and audience, a made-up signature), 30 Hellos at
        # once and 30 after: one TokenReview
        # (made once: its exp comes from the clock, so two calls a second apart differ)
        forged = forged_token("one")
        codes = await asyncio.gather(*(attempt(ch, forged) for _ in range(30)))
        codes += [await attempt(ch, forged) for _ in range(30)]
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
        assert reviews.reviews == 1

        # 30 different forged tokens at once: a review each, but never more than 4 at a time
        codes = await asyncio.gather(*(attempt(ch, forged_token(str(i))) for i in range(30)))
        assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE}
        assert 1 < reviews.reviews <= 31
        assert reviews.peak <= 4
        assert failures("auth") - auth_before == 90 + codes.count(grpc.StatusCode.UNAUTHENTICATED)

        # and the real runner still gets in
        runner = Stream(ch)
        await runner.hello(pod, await pod_token(core, pod))
        welcome = await asyncio.wait_for(runner.first(), 10)
        assert welcome.WhichOneof("message") == "welcome"
        runner.call.cancel()
