"""The operator's metrics, the chart's dashboard and its alerts against a real Prometheus.

Prometheus (Debian's package) scrapes the real operator while it serves real jobs, with the
failures the alerts are about injected for real: a runner SIGSTOPped until the operator kills
it, an entrypoint that raises, a pod the API server refuses (PodSecurity), a job refused at
capacity, a forged runner. Then every dashboard query and every alert rule the chart ships is
evaluated by that Prometheus, and the alerts that should fire do.

With ``AGENT_OPERATOR_DASHBOARD_PNG=path`` the dashboard panels are also drawn with matplotlib
from the same run (``make dashboard-image``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client
from livekit import api

from agent_jobrunner.protocol import PROTOCOL_VERSION, pb, pb_grpc
from agent_operator.worker.connection import STATUS_INTERVAL
from devenv.environment import TestEnvironment
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from devenv.prometheus import PrometheusServer, ScrapeTarget, binary
from tests.support import environments
from tests.support.monitoring import (
    alert_rules,
    alert_signal,
    panel_queries,
    render_alert_rules,
    variable_selectors,
    write_rule_file,
)
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    pid,
    status_equals,
    wait_participant,
)

pytestmark = pytest.mark.e2e

RELEASE = "t"
# the job label the ServiceMonitor gives: the name of the metrics Service (test_chart.py)
METRICS_JOB = f"{RELEASE}-livekit-agent-operator-metrics"


async def forge_attach(port: int, namespace: str) -> None:
    """A runner with a made-up token: the supervisor must refuse it (auth)."""
    async with grpc.aio.insecure_channel(f"{environments.node_ip()}:{port}") as channel:
        call: Any = pb_grpc.RunnerSupervisorStub(channel).Attach()
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            pod_namespace=namespace,
            pod_name="forged",
            pod_uid=str(uuid.uuid4()),
            credential="not-a-token",
            state=pb.RUNNER_STATE_IDLE,
        )
        await call.write(pb.RunnerMessage(hello=hello))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def job_pod_of(deployments: Deployments, name: str, room: str) -> Any:
    async def find() -> Any:
        for pod in await deployments.pods(name):
            if (pod.metadata.annotations or {}).get("agentoperator.dev/room") == room:
                return pod
        return None

    return await eventually(find, 60, f"the pod of room {room}")


def has_data(prom: PrometheusServer, expr: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await prom.query(expr))

    return check


async def refuse_at_capacity(
    prom: PrometheusServer, lk: api.LiveKitAPI, deployments: Deployments, name: str, agent: str
) -> list[str]:
    """Calls in a burst to a deployment that takes one at a time: one is answered at_capacity.

    LiveKit offers a job only to a worker it believes available, and the operator tells it
    "full" in a status update within 0.1 s of the change. So a refusal at capacity is what a
    burst meets, quicker than that update. If an update lands inside the burst, LiveKit offers the
    rest to nobody; then the call is ended and the burst tried again. Returns the rooms.
    """
    expr = (
        f'agent_operator_availability_answers_total{{namespace="{deployments.namespace}", '
        f'deployment="{name}", reason="at_capacity"}} >= 1'
    )
    rooms: list[str] = []
    for attempt in range(4):
        burst = [f"burst-{attempt}-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
        rooms += burst
        # the call that is answered must outlast the rest of the test (the AtCapacity check
        # reads it): LiveKit would close a room holding only the agent after 60 s
        await asyncio.gather(*(dispatch(lk, agent, room, empty_timeout=900) for room in burst))
        with contextlib.suppress(TimeoutError):
            await eventually(has_data(prom, expr), 15, f"Prometheus has {expr}")
            return rooms
        for room in burst:
            with contextlib.suppress(api.TwirpError):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, name, "activeJobs", 0, timeout=60)
        await asyncio.sleep(STATUS_INTERVAL + 1)  # LiveKit has heard the worker is available again
    raise AssertionError(f"no burst of calls to {name} was answered at_capacity")


async def run_scenario(
    prom: PrometheusServer,
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> list[str]:
    """Jobs that succeed, fail, get killed, get rejected and get refused. Returns the rooms."""
    ns = deployments.namespace
    await create_credentials(client.CoreV1Api(k8s), ns, livekit)
    calls = await deployments.create(
        agent_deployment(
            "calls",
            livekit,
            f"{AGENTS}:beacon_forever",
            maxConcurrentJobs=2,
            warmPool={"size": 1},
            heartbeat={"pingInterval": "500ms", "pingTimeout": "4s"},
        )
    )
    flaky = await deployments.create(agent_deployment("flaky", livekit, f"{AGENTS}:fail_after_join"))
    # restricted PodSecurity refuses an added capability: this deployment's pods are never created
    refused_body = agent_deployment("refused", livekit, f"{AGENTS}:beacon_forever")
    refused_body["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    }
    refused = await deployments.create(refused_body)
    busy = await deployments.create(
        agent_deployment("busy", livekit, f"{AGENTS}:beacon_forever", maxConcurrentJobs=1)
    )
    await operator.wait_ready()
    for name in ("calls", "flaky", "refused", "busy"):
        await deployments.wait_condition(name, "Ready", "True", timeout=90)
    await status_equals(deployments, "calls", "idlePods", 1, timeout=90)
    # as in production, Prometheus has seen each deployment before its first job ends (a
    # counter first seen at 1 has no increase)
    for name in ("calls", "flaky", "refused", "busy"):
        expr = (
            f'agent_operator_jobs_ended_total{{namespace="{ns}", deployment="{name}", outcome="failed"}} == 0'
        )
        await eventually(has_data(prom, expr), 60, f"Prometheus has scraped {name}")

    rooms = [f"{kind}-{uuid.uuid4().hex[:6]}" for kind in ("warm", "cold", "fail", "reject")]
    warm, cold, fail, reject = rooms
    # two at once: one takes the idle pool pod, the other a new pod (the pool ran dry)
    await asyncio.gather(
        dispatch(lk, calls["spec"]["agentName"], warm), dispatch(lk, calls["spec"]["agentName"], cold)
    )
    await asyncio.gather(wait_participant(lk, warm, "agent-"), wait_participant(lk, cold, "agent-"))
    await dispatch(lk, flaky["spec"]["agentName"], fail)
    await dispatch(lk, refused["spec"]["agentName"], reject)
    await forge_attach(operator.runner_port, ns)

    # a hung runner: the operator stops hearing pongs and deletes its pod
    hung = await job_pod_of(deployments, "calls", warm)
    os.kill(await pid(deployments, hung), signal.SIGSTOP)
    await status_equals(deployments, "calls", "jobsFailed", 1, timeout=60)
    await lk.room.delete_room(api.DeleteRoomRequest(room=cold))
    await status_equals(deployments, "calls", "jobsSucceeded", 1, timeout=60)
    await status_equals(deployments, "flaky", "jobsFailed", 1, timeout=60)
    await status_equals(deployments, "refused", "jobsFailed", 1, timeout=60)
    rooms += await refuse_at_capacity(prom, lk, deployments, "busy", busy["spec"]["agentName"])
    return rooms


async def traffic(lk: api.LiveKitAPI, calls: str, flaky: str, seconds: float) -> list[str]:
    """A call every 2.5 s lasting 3-12 s (some refused at capacity), and a failing one now and then."""
    rooms: list[str] = []
    hangups: set[asyncio.Task[None]] = set()

    async def hang_up(room: str, after: float) -> None:
        await asyncio.sleep(after)
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        room = f"call-{n}-{uuid.uuid4().hex[:4]}"
        rooms.append(room)
        await dispatch(lk, flaky if n % 7 == 0 else calls, room)
        hangups.add(asyncio.create_task(hang_up(room, 3 + (n * 37 % 10))))
        await asyncio.sleep(2.5)
    await asyncio.gather(*hangups)
    return rooms


async def test_dashboard_and_alerts_evaluate_against_a_real_prometheus(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    local_kubelet: TestEnvironment,
    tmp_path: Path,
) -> None:
    ns = deployments.namespace
    rules = await asyncio.to_thread(render_alert_rules, RELEASE, ns)
    rule_path = write_rule_file(rules, tmp_path / "alerts.yaml")
    alerts = alert_rules(rules)
    assert len(alerts) >= 8
    check = await asyncio.to_thread(
        subprocess.run,
        [binary("promtool"), "check", "rules", str(rule_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in check.stdout

    prom = PrometheusServer(
        local_kubelet.workdir / "logs" / f"prometheus-{ns}",
        [ScrapeTarget(METRICS_JOB, f"127.0.0.1:{operator.metrics_port}", {"namespace": ns})],
        [rule_path],
    )
    await asyncio.to_thread(prom.start)
    started = time.time()
    try:
        rooms = await run_scenario(prom, operator, deployments, k8s, livekit, lk)
        try:
            await check_prometheus(prom, ns, alerts)
            png = os.environ.get("AGENT_OPERATOR_DASHBOARD_PNG")
            if png:  # a longer run, for a picture worth looking at
                from tests.support.dashboard_image import render_dashboard

                calls, flaky = [(await deployments.get(n))["spec"]["agentName"] for n in ("calls", "flaky")]
                rooms += await traffic(lk, calls, flaky, seconds=150)
                await asyncio.sleep(5)  # the last scrapes
                await render_dashboard(prom, ns, started, time.time(), Path(png))
        finally:
            for room in rooms:
                with contextlib.suppress(api.TwirpError):  # some have ended already
                    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    finally:
        prom.stop()


async def check_prometheus(prom: PrometheusServer, ns: str, alerts: list[dict[str, Any]]) -> None:
    await eventually(prom.targets_up, 30, "the operator scraped")
    sel = f'namespace="{ns}"'

    # everything the scenario did has reached Prometheus
    for expr in (
        f'agent_operator_jobs_ended_total{{{sel}, deployment="calls", outcome="killed"}} >= 1',
        f'agent_operator_jobs_ended_total{{{sel}, deployment="calls", outcome="success"}} >= 1',
        f'agent_operator_jobs_ended_total{{{sel}, deployment="flaky", outcome="failed"}} >= 1',
        f'agent_operator_jobs_ended_total{{{sel}, deployment="refused", outcome="rejected"}} >= 1',
        f'agent_operator_availability_answers_total{{{sel}, deployment="busy", reason="at_capacity"}} >= 1',
        f'agent_operator_jobs_active{{{sel}, deployment="busy"}} == 1',  # its one job, for AtCapacity
        f'agent_operator_jobs_started_total{{{sel}, deployment="calls", path="warm"}} >= 1',
        f'agent_operator_jobs_started_total{{{sel}, deployment="calls", path="cold"}} >= 1',
        f'agent_operator_job_duration_seconds_count{{{sel}, deployment="calls", outcome="success"}} >= 1',
        f'agent_operator_heartbeat_rtt_seconds_count{{{sel}, deployment="calls"}} >= 1',
        f'agent_operator_kube_api_errors_total{{{sel}, operation="create_pod"}} >= 1',
        f'agent_operator_runner_attach_failures_total{{{sel}, reason="auth"}} >= 1',
        f'agent_operator_pool_target_pods{{{sel}, deployment="calls"}} == 1',
        f'agent_operator_max_concurrent_jobs{{{sel}, deployment="calls"}} == 2',
        f'agent_operator_worker_connected{{{sel}, deployment="flaky"}} == 1',
    ):
        await eventually(has_data(prom, expr), 60, f"Prometheus has {expr}")

    # every dashboard panel query returns data, with the variables set as a person would
    for deployment in (".*", "calls"):
        for q in panel_queries(ns, deployment, "30s"):
            result = await prom.query(q.expr)
            assert result, f"panel {q.panel!r} (deployment={deployment}) returned no data: {q.expr}"
    for label, selector in variable_selectors(ns):
        series = await prom.query(selector)
        values = {s["metric"].get(label) for s in series}
        assert values >= ({ns} if label == "namespace" else {"calls", "flaky", "refused"}), (label, values)

    # every rule is loaded and evaluated by Prometheus without error
    async def evaluated() -> list[dict[str, Any]] | None:
        loaded = await prom.rules()
        done = all(r.get("lastEvaluation", "").startswith("20") for r in loaded)
        return loaded if loaded and done else None

    loaded = await eventually(evaluated, 30, "every rule evaluated")
    assert {r["name"] for r in loaded} == {a["alert"] for a in alerts}
    for rule in loaded:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    # every alert's signal returns data, and the whole expression evaluates
    for alert in alerts:
        signal_result = await prom.query(alert_signal(alert["expr"]))
        assert signal_result, f"{alert['alert']}: its signal returned no data: {alert['expr']}"
        await prom.query(alert["expr"])

    # the alerts the injected failures are about fire, for the deployments they concern
    def firing_for(name: str) -> set[str]:
        return {s["metric"].get("deployment", "") for s in results[name]}

    results = {a["alert"]: await prom.query(a["expr"]) for a in alerts}
    assert firing_for("AgentOperatorJobFailureRatioHigh") >= {"calls", "flaky", "refused"}
    assert firing_for("AgentOperatorRunnersKilled") == {"calls"}
    assert firing_for("AgentOperatorWarmPoolExhausted") == {"calls"}
    assert "busy" in firing_for("AgentOperatorRefusingJobs")
    assert firing_for("AgentOperatorAtCapacity") == {"busy"}  # its one job runs; the others have none
    assert not results["AgentOperatorWorkerDisconnected"]
    assert not results["AgentOperatorDown"]

    async def pending_or_firing() -> set[str] | None:
        names = {a["labels"]["alertname"] for a in await prom.alerts()}
        return names if "AgentOperatorRunnersKilled" in names else None

    active = await eventually(pending_or_firing, 30, "RunnersKilled active in Prometheus")
    assert "AgentOperatorJobFailureRatioHigh" in active
