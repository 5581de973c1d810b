"""A real runner's attach under unauthenticated load on the runner port.

    devenv/netns-run python -m tests.bench.attach_flood [--silent 1000] [--bogus 400] [--samples 20]

Starts the real API server (for TokenReview) and the operator's Supervisor with its default
admission limits, then measures Hello->Welcome of a runner with a valid pod-bound token,
first on a quiet port, then while another process, from one address (127.0.0.1), keeps
``--silent`` streams open that never send a Hello (each reopened 0.2 s after it ends) and
sends ``--bogus`` Hellos with distinct forged tokens (JWTs of the right audience, signed
by nobody); the runner dials the test host's
veth address. Prints the attach latencies, the TokenReviews sent, and the refusals by reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from agent_operator.kube.pods import PodTerminator
from agent_operator.kube.tokenreview import TokenReviewAuthenticator
from agent_operator.supervisor import PodIdentity, Supervisor
from devenv.environment import TestEnvironment
from devenv.kubeclient import api_client, create_namespace
from tests.support.supervision import binding_for, forged_token, parked_pod, pod_token


class FakePod:
    """What a Hello names of a pod (the flood process has no API access)."""

    def __init__(self, namespace: str, name: str, uid: str) -> None:
        self.metadata = argparse.Namespace(namespace=namespace, name=name, uid=uid)


class CountingReviews(TokenReviewAuthenticator):
    reviews = 0

    async def _review(self, credential: str) -> PodIdentity:
        self.reviews += 1
        return await super()._review(credential)


def hello(pod: Any, credential: str) -> pb.RunnerMessage:
    return pb.RunnerMessage(
        hello=pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            pod_namespace=pod.metadata.namespace,
            pod_name=pod.metadata.name,
            pod_uid=pod.metadata.uid,
            credential=credential,
        )
    )


async def attach_once(channel: grpc.aio.Channel, pod: Any, token: str) -> float:
    """Seconds from Hello to Welcome; the stream is then closed (the next attach is fresh)."""
    call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()
    t0 = time.perf_counter()
    await call.write(hello(pod, token))
    first = await call.read()
    elapsed = time.perf_counter() - t0
    call.cancel()
    if first is grpc.aio.EOF or first.WhichOneof("message") != "welcome":
        raise RuntimeError(f"not welcomed: {await call.code()} {await call.details()}")
    return elapsed


async def samples(channel: grpc.aio.Channel, pod: Any, token: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        out.append(await attach_once(channel, pod, token))
        await asyncio.sleep(0.05)
    return out


async def silent(channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
    """Open a stream, never send a Hello, open the next when it is refused or times out."""
    while not stop.is_set():
        call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()
        reader = asyncio.ensure_future(call.read())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for fut in (reader, stopper):
            fut.cancel()
        await asyncio.gather(reader, stopper, return_exceptions=True)
        call.cancel()
        await asyncio.sleep(0.2)


async def bogus(channel: grpc.aio.Channel, pod: Any, count: int) -> None:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()
            await call.write(hello(pod, forged_token(f"{uuid.uuid4().hex}-{i}")))
            await call.read()
            call.cancel()

    await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)


def refusals() -> dict[str, int]:
    out = {}
    for metric in REGISTRY.collect():
        if metric.name == "agent_operator_runner_attach_failures":
            for s in metric.samples:
                if s.name.endswith("_total") and s.value:
                    out[s.labels["reason"]] = int(s.value)
    return out


def figures(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{label}: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} attaches)"


async def run(env: TestEnvironment, args: argparse.Namespace) -> None:
    assert env.kube is not None
    other_host = os.environ.get("AGENT_OPERATOR_TEST_NODE_IP")
    if not other_host:
        raise SystemExit("run inside the test network namespace: devenv/netns-run python -m ...")
    async with await api_client(env.kube.kubeconfig) as api:
        core = client.CoreV1Api(api)
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        await create_namespace(core, namespace)
        pod = await parked_pod(core, namespace)
        token = await pod_token(core, pod)
        reviews = CountingReviews(api)
        sup = Supervisor(reviews, PodTerminator(api))
        sup.expect(binding_for(pod))
        port = await sup.start("0.0.0.0:0")
        try:
            async with grpc.aio.insecure_channel(f"{other_host}:{port}") as runner:
                quiet = await samples(runner, pod, token, args.samples)
                print(figures("quiet port", quiet), flush=True)
                before = reviews.reviews
                t0 = time.perf_counter()
                attacker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.bench.attach_flood",
                    f"--flood=127.0.0.1:{port}",
                    f"--silent={args.silent}",
                    f"--bogus={args.bogus}",
                    f"--pod={pod.metadata.namespace}/{pod.metadata.name}/{pod.metadata.uid}",
                    stdout=asyncio.subprocess.PIPE,
                )
                assert attacker.stdout is not None
                await attacker.stdout.readline()  # "FLOODING": streams open, bogus Hellos going
                loaded = await samples(runner, pod, token, args.samples)
                await attacker.stdout.readline()  # "BOGUS DONE"
                spent = time.perf_counter() - t0
                attacker.terminate()
                await attacker.wait()
            print(
                figures(f"under {args.silent} silent streams + {args.bogus} bogus Hellos", loaded),
                flush=True,
            )
            print(
                f"TokenReviews for {args.bogus} distinct bogus credentials: {reviews.reviews - before}"
                f" in {spent:.1f}s",
                flush=True,
            )
            print(f"refusals by reason: {refusals()}", flush=True)
        finally:
            await sup.stop()


async def flood(args: argparse.Namespace) -> None:
    """The attacker's process: silent streams and bogus Hellos until terminated."""
    namespace, name, uid = args.pod.split("/")
    pod = FakePod(namespace, name, uid)
    async with grpc.aio.insecure_channel(args.flood) as channel:
        stop = asyncio.Event()
        holders = [asyncio.create_task(silent(channel, stop)) for _ in range(args.silent)]
        await asyncio.sleep(1)
        print("FLOODING", flush=True)
        await bogus(channel, pod, args.bogus)
        print("BOGUS DONE", flush=True)
        await asyncio.gather(*holders, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--silent", type=int, default=1000)
    parser.add_argument("--bogus", type=int, default=400)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--flood", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pod", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(flood(args))
        return
    with tempfile.TemporaryDirectory(prefix="attach-flood-") as tmp:
        env = TestEnvironment(Path(tmp), livekit=False, kubelet=False)
        env.start()
        try:
            asyncio.run(run(env, args))
        finally:
            env.stop()


if __name__ == "__main__":
    main()
