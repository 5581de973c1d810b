"""The chart's RBAC is enough and no more, in both modes: the operator runs under the chart's
ServiceAccount (a real token from TokenRequest) against the real API server and completes a
job, and the same identity is refused what it was not granted.

- namespaced (``watchNamespaces``): Roles in the listed namespaces only; a Secret elsewhere
  is refused.
- cluster-wide (the default): a ClusterRole; the operator (started without ``--namespace``)
  serves an AgentDeployment in a namespace other than its own release's.

In both, Secrets are readable by name only, never listed."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api

from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess, write_token_kubeconfig
from devenv.kubeclient import api_client, create_namespace
from devenv.livekit import LiveKitAccess
from tests.support.apply import Applier
from tests.support.chart import render, sets
from tests.support.operator import (
    AGENTS,
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    dispatch,
    no_other_deployments,
    release_deployments,
    starts_reported,
    status_equals,
    wait_participant,
)
from tests.support.operator_pods import leader_label, operator_pods

pytestmark = pytest.mark.e2e


async def refused(call: Any) -> int:
    with pytest.raises(ApiException) as exc:
        await call
    return int(exc.value.status)


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
async def test_operator_runs_under_the_charts_rbac_and_no_more(
    mode: str,
    k8s: client.ApiClient,
    ns: str,
    kube: KubeAccess,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
    local_kubelet: TestEnvironment,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(k8s)
    release = f"r{uuid.uuid4().hex[:5]}"
    watch = [ns] if mode == "namespaced" else []
    docs = render(release, ns, *sets(f"watchNamespaces={{{ns}}}")) if watch else render(release, ns)
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    own = {f"{release}-livekit-agent-operator-leader", f"{release}-livekit-agent-operator-runner-tls"}
    assert roles == ({f"{release}-livekit-agent-operator", *own} if watch else own)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    lease = env["AGENT_OPERATOR_LEADER_ELECTION_LEASE"]
    tls_secret = env["AGENT_OPERATOR_RUNNER_TLS_SECRET"]  # TLS by default, its own certificate
    assert env["AGENT_OPERATOR_LEADER_ELECTION_NAMESPACE"] == ns
    assert env["AGENT_OPERATOR_LEADER_LABEL_POD"] == "$(POD_NAME)"
    applier = Applier(k8s)
    cluster_scoped = [d for d in docs if await applier.cluster_scoped(d)]
    other = f"t-{uuid.uuid4().hex[:8]}"  # a second namespace, not the release's
    op: OperatorProcess | None = None
    stack = contextlib.AsyncExitStack()
    try:
        for doc in docs:  # everything the chart renders is accepted by the API server
            await applier.apply(doc, ns)
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        token = await core.create_namespaced_service_account_token(
            sa,
            ns,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        kubeconfig = tmp_path / "operator.kubeconfig"
        # the operator's own pod (never run: bound to no node of ours), for its leader label
        await stack.enter_async_context(operator_pods(core, ns, ["op"], deployment["spec"]["template"]))
        write_token_kubeconfig(kubeconfig, kube.server, kube.ca_cert, sa, token.status.token)
        await create_namespace(core, other, {"agentoperator.dev/test": "true"})
        await create_credentials(core, other, livekit, name="elsewhere")

        # no more: Secrets by name only, never listed (here, elsewhere, or across namespaces)
        async with await api_client(kubeconfig) as as_operator:
            as_core = client.CoreV1Api(as_operator)
            assert await refused(as_core.list_namespaced_secret(ns)) == 403, "secrets: never list"
            assert await refused(as_core.list_namespaced_secret(other)) == 403
            assert await refused(as_core.list_secret_for_all_namespaces()) == 403
            assert await refused(as_core.delete_namespaced_secret("elsewhere", other)) == 403
            if watch:  # namespaced: nothing outside the namespaces it serves
                assert await refused(as_core.read_namespaced_secret("elsewhere", other)) == 403
                assert await refused(as_core.list_namespaced_pod(other)) == 403
            else:  # cluster-wide: an AgentDeployment's Secret in any namespace, by name
                assert (await as_core.read_namespaced_secret("elsewhere", other)).metadata.name == "elsewhere"
            # Leases: its own, by name, in its own namespace
            leases = client.CoordinationV1Api(as_operator)
            assert (
                await refused(leases.read_namespaced_lease("kube-controller-manager", "kube-system")) == 403
            )
            assert await refused(leases.list_namespaced_lease(ns)) == 403, "leases: only its own by name"

        # enough: the operator under that identity completes a job end to end; cluster-wide,
        # for an AgentDeployment outside the namespace it is installed in
        home = ns if watch else other
        await create_credentials(core, home, livekit)
        if not watch:
            await no_other_deployments(k8s, {ns, other})
        op = OperatorProcess(
            kubeconfig,
            watch,
            local_kubelet.workdir / "logs" / f"operator-rbac-{mode}-{ns}.log",
            # leader election as the chart configures it
            extra_args=[
                f"--leader-election-namespace={ns}",
                f"--leader-election-lease={lease}",
                "--identity=op",
                "--leader-label-pod=op",
                f"--runner-tls-secret={tls_secret}",
                f"--runner-tls-secret-namespace={env['AGENT_OPERATOR_RUNNER_TLS_SECRET_NAMESPACE']}",
            ],
        )
        op.start()
        deployments = Deployments(k8s, home)
        body = await deployments.create(agent_deployment("rbac", livekit, f"{AGENTS}:beacon_forever"))
        await op.wait_ready()
        await deployments.wait_condition("rbac", "Ready", "True", timeout=90)
        room = f"room-{uuid.uuid4().hex[:6]}"
        await dispatch(lk, body["spec"]["agentName"], room)
        await wait_participant(lk, room, "agent-")
        (pod,) = await deployments.pods("rbac")
        assert pod.metadata.namespace == home
        await starts_reported(deployments, "rbac", 1)
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await status_equals(deployments, "rbac", "jobsSucceeded", 1, timeout=90)
        made = await core.read_namespaced_secret(tls_secret, ns)  # the runner attached over TLS with it
        assert set(made.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        held = await client.CoordinationV1Api(k8s).read_namespaced_lease(lease, ns)
        assert held.spec.holder_identity == "op"
        assert await leader_label(core, ns, "op") == "true", "the runner Service selects the leader's pod"
        assert op.alive()
        op.stop()  # a handover with no successor: the Lease released, then a clean exit
        assert op.proc is not None
        assert op.proc.returncode == 0, op.tail()
        released = await client.CoordinationV1Api(k8s).read_namespaced_lease(lease, ns)
        assert not released.spec.holder_identity
        assert await leader_label(core, ns, "op") == "false"
        assert "Forbidden" not in op.log_text(), "the operator asked for something RBAC does not grant"
    finally:
        if op is not None:
            op.stop()
        await stack.aclose()
        for doc in cluster_scoped:
            await applier.delete(doc, ns)
        try:
            await release_deployments(k8s, other)
            await core.delete_namespace(other)
        except ApiException as exc:
            if exc.status != 404:
                raise
