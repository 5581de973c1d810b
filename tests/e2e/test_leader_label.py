"""The leader's pod label, which the chart's runner Service selects: runner pods only ever
reach the operator that leads, while every replica is Ready and scraped.

First the label writer alone against the real API server (the latest wish wins, a missing
pod is given up on, an unreachable API server is retried), then two operator processes with
pods rendered from the chart's own pod template: the real EndpointSlice controller lists the
leader's pod, and only it, behind the runner Service, before and after a handover.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from agent_operator.kube.leader_label import LEADER_LABEL, LeaderPodLabel
from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess
from devenv.kubeclient import eventually
from devenv.procs import free_port
from tests.support.chart import render, sets
from tests.support.operator import OperatorProcess
from tests.support.operator_pods import (
    endpoint_pods,
    kubelet_less_node,
    leader_label,
    operator_pods,
    report_running,
)

pytestmark = pytest.mark.e2e


async def test_the_label_follows_the_latest_wish(
    k8s: client.ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    core = client.CoreV1Api(k8s)
    template = {"metadata": {"labels": {"app": "op"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    async with operator_pods(core, namespace, ["op"], template):
        label = LeaderPodLabel(k8s, namespace, "op")
        missing = LeaderPodLabel(k8s, namespace, "not-there")
        writers = [asyncio.create_task(label.run()), asyncio.create_task(missing.run())]
        try:
            label.want(True)
            assert await label.settled(20)
            assert await leader_label(core, namespace, "op") == "true"
            for wish in (False, True, False):  # faster than the writer: the last one counts
                label.want(wish)
            assert await label.settled(20)
            assert await leader_label(core, namespace, "op") == "false"
            assert (await core.read_namespaced_pod("op", namespace)).metadata.labels["app"] == "op", "merged"

            # a pod that does not exist: given up on (an error), the writer lives on
            with caplog.at_level(logging.ERROR, logger="agent_operator.leader_label"):
                missing.want(True)
                assert await missing.settled(20)
            assert any("cannot label" in r.getMessage() and "404" in r.getMessage() for r in caplog.records)
            assert not writers[1].done()

            # the API server away: retried, and written once it is back
            reachable = label._core
            cfg = client.Configuration()
            cfg.host = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
            async with client.ApiClient(cfg) as away:
                label._core = client.CoreV1Api(away)
                label.want(True)
                assert not await label.settled(2.5), "nothing can be written meanwhile"
                assert not writers[0].done()
                label._core = reachable
            assert await label.settled(20)
            assert await leader_label(core, namespace, "op") == "true"
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)


async def test_the_runner_service_sends_runners_to_the_leader_only(
    kube: KubeAccess, ns: str, local_kubelet: TestEnvironment, k8s: client.ApiClient
) -> None:
    """The chart's two Services, the real EndpointSlice controller, and two operator pods
    (made from the chart's pod template, reported running and ready): the runner Service's
    endpoints are the leader's pod alone, before and after a handover; the metrics Service's
    are both."""
    core, discovery = client.CoreV1Api(k8s), client.DiscoveryV1Api(k8s)
    docs = render("t", ns, *sets("replicaCount=2"))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    runner_service, metrics_service = deploy["metadata"]["name"], f"{deploy['metadata']['name']}-metrics"
    for doc in docs:
        if doc["kind"] == "Service":
            await core.create_namespaced_service(ns, doc)
        elif doc["kind"] == "ServiceAccount":
            await core.create_namespaced_service_account(ns, doc)
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    lease = env["AGENT_OPERATOR_LEADER_ELECTION_LEASE"]
    a, b = f"op-a-{uuid.uuid4().hex[:4]}", f"op-b-{uuid.uuid4().hex[:4]}"
    logs: Path = local_kubelet.workdir / "logs"

    def operator(pod: str) -> OperatorProcess:
        args = [f"--leader-election-namespace={ns}", f"--leader-election-lease={lease}", f"--identity={pod}"]
        return OperatorProcess(
            kube.kubeconfig,
            [ns],
            logs / f"operator-{pod}.log",
            extra_args=[*args, f"--leader-label-pod={pod}"],
        )

    async def endpoints_are(service: str, pods: list[str]) -> bool:
        return await endpoint_pods(discovery, ns, service) == sorted(pods)

    first, second = operator(a), operator(b)
    # the pods of a two-replica Deployment (admitted under `restricted`), on a node of their own
    async with (
        kubelet_less_node(core, f"node-{uuid.uuid4().hex[:6]}") as node,
        operator_pods(core, ns, [a, b], deploy["spec"]["template"], node=node),
    ):
        for n, pod in enumerate((a, b)):
            await report_running(core, ns, pod, f"10.244.{uuid.uuid4().int % 250}.{n + 10}")
        try:
            first.start()
            await first.wait_ready()
            await eventually(lambda: endpoints_are(runner_service, [a]), 30, f"runner endpoints: {a} alone")
            # b's container restarted in place after it had led: its pod still says so
            await core.patch_namespaced_pod(b, ns, {"metadata": {"labels": {LEADER_LABEL: "true"}}})
            await eventually(lambda: endpoints_are(runner_service, [a, b]), 30, "the stale label selected")
            second.start()
            await second.wait_ready()
            assert await second.readyz() == "200 standby"
            assert await leader_label(core, ns, b) == "false", "ready only once the label is off"
            await eventually(lambda: endpoints_are(runner_service, [a]), 30, "the standby's pod left")
            await eventually(lambda: endpoints_are(metrics_service, [a, b]), 30, "every replica scraped")

            # a handover: the runner Service follows the Lease
            assert first.proc is not None
            first.proc.send_signal(signal.SIGTERM)
            assert await first.wait_exited(40) == 0, first.tail()
            await eventually(lambda: endpoints_are(runner_service, [b]), 30, f"runner endpoints: {b} alone")
            assert await leader_label(core, ns, a) == "false"
            assert await second.readyz() == "200 ready"
            for op in (first, second):
                assert '"level": "ERROR", "logger": "agent_operator' not in op.log_text(), op.tail(40)
        finally:
            first.stop()
            second.stop()
