"""The leader's pod label, which the chart's runner Service selects: runner pods only ever
reach the operator that leads, while every replica is Ready and scraped.

First the label writer alone against the real API server (the latest wish wins, a missing
pod is given up on, an unreachable API server is retried), then two operator processes with
pods rendered from the chart's own pod template: the runner Service's selector, evaluated by
the API server, finds the leader's pod and only it, before and after a handover.
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
from tests.support.chart import render, sets
from tests.support.operator import OperatorProcess
from tests.support.operator_pods import leader_label, operator_pods, selected
from tests.testenv.environment import TestEnvironment
from tests.testenv.kube import KubeAccess
from tests.testenv.kubeclient import eventually
from tests.testenv.procs import free_port

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


async def test_the_runner_service_selects_the_leader_only(
    kube: KubeAccess, ns: str, local_kubelet: TestEnvironment, k8s: client.ApiClient
) -> None:
    core = client.CoreV1Api(k8s)
    docs = render("t", ns, *sets("replicaCount=2"))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    runner_service = by_name[deploy["metadata"]["name"]]["spec"]["selector"]
    metrics_service = by_name[f"{deploy['metadata']['name']}-metrics"]["spec"]["selector"]
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    lease = env["AGENT_OPERATOR_LEADER_ELECTION_LEASE"]
    template = deploy["spec"]["template"]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    await core.create_namespaced_service_account(ns, {"metadata": {"name": sa["metadata"]["name"]}})
    a, b = f"op-a-{uuid.uuid4().hex[:4]}", f"op-b-{uuid.uuid4().hex[:4]}"
    # the pods of a two-replica Deployment (admitted under `restricted`)
    async with operator_pods(core, ns, [a, b], template):
        logs: Path = local_kubelet.workdir / "logs"

        def operator(pod: str) -> OperatorProcess:
            args = [
                f"--leader-election-namespace={ns}",
                f"--leader-election-lease={lease}",
                f"--identity={pod}",
            ]
            return OperatorProcess(
                kube.kubeconfig,
                [ns],
                logs / f"operator-{pod}.log",
                extra_args=[*args, f"--leader-label-pod={pod}"],
            )

        first, second = operator(a), operator(b)
        first.start()
        try:
            await first.wait_ready()

            async def only(pod: str) -> bool:
                return await selected(core, ns, runner_service) == [pod]

            await eventually(lambda: only(a), 30, f"the runner Service selects {a} alone")
            # b's container restarted in place after it had led: its pod still says so
            await core.patch_namespaced_pod(b, ns, {"metadata": {"labels": {LEADER_LABEL: "true"}}})
            assert await selected(core, ns, runner_service) == sorted([a, b])
            second.start()
            await second.wait_ready()
            assert await second.readyz() == "200 standby"
            await eventually(lambda: only(a), 30, "the standby took the leader label off its pod")
            assert await leader_label(core, ns, b) == "false"
            assert await selected(core, ns, metrics_service) == sorted([a, b]), "every replica is scraped"

            # a handover: the Service follows the Lease
            assert first.proc is not None
            first.proc.send_signal(signal.SIGTERM)
            assert await first.wait_exited(40) == 0, first.tail()
            await eventually(lambda: only(b), 30, f"the runner Service selects {b} alone")
            assert await leader_label(core, ns, a) == "false"
            assert await second.readyz() == "200 ready"
            for op in (first, second):
                assert '"level": "ERROR", "logger": "agent_operator' not in op.log_text(), op.tail(40)
        finally:
            first.stop()
            second.stop()
