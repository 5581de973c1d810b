"""`helm install` of the chart on the real node, as a user installs it (issue 12, item 5).

The operator image built here (``make images``) is imported into the node's containerd and the
chart is installed with its defaults except the image (devenv/helm_release.py): the operator
runs as a pod under the chart's ServiceAccount and RBAC, reaches the API server in-cluster
(the ``kubernetes`` Service, kube-proxy), and runner pods attach at
``livekit-agent-operator.agent-operator.svc:50051`` (CoreDNS, kube-proxy) over TLS.

- an AgentDeployment created with the API serves a job end to end;
- ``helm upgrade`` to another operator image tag while a call is live: the call keeps its agent,
  its job is not failed, and the next dispatch is served;
- ``helm uninstall`` leaves the CRD and the AgentDeployments.

The release serves all namespaces (the chart's default), so each test first waits until no
other test's AgentDeployment is left. On the real node.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from livekit import api

from devenv.environment import TestEnvironment
from devenv.helm_release import RELEASE, OperatorRelease, load_operator_image, split_ref
from devenv.images import find_images
from devenv.kubeclient import api_client, eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    AGENTS,
    CRD_FILE,
    GROUP,
    PLURAL,
    STARTED_LINE,
    VERSION,
    Deployments,
    agent_deployment,
    create_credentials,
    dispatch,
    no_other_deployments,
    starts_reported,
    status_equals,
    wait_participant,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


class Installed:
    """The release and the two operator image references (the second: a new tag of the same
    content, for the upgrade)."""

    def __init__(self, release: OperatorRelease, first: str, second: str) -> None:
        self.release = release
        self.first = first
        self.second = second


@pytest.fixture(scope="module")
def installed(test_env: TestEnvironment) -> Iterator[Installed]:
    if test_env.node is None:
        pytest.skip("the operator runs as a pod of the chart: needs the local node")
    assert test_env.kube is not None
    image = find_images(["operator"])["operator"]
    first = load_operator_image(test_env.node, image)
    second = load_operator_image(test_env.node, image, also_tag=f"{split_ref(image.tag)[1]}-next")
    release = OperatorRelease(test_env.kube.kubeconfig)
    kubeconfig = test_env.kube.kubeconfig

    async def install() -> float:
        async with await api_client(kubeconfig) as k8s:
            return await release.install(client.CoreV1Api(k8s), first)

    seconds = asyncio.run(install())
    print(f"\n[helm] install -> operator Deployment available in {seconds:.1f}s")
    yield Installed(release, first, second)

    async def remove() -> None:
        if await release.installed():
            await release.uninstall()
        async with await api_client(kubeconfig) as k8s:
            await client.CoreV1Api(k8s).delete_namespace(release.namespace)

    asyncio.run(remove())


async def ready(
    k8s: client.ApiClient, ns: str, name: str, livekit: LiveKitAccess
) -> tuple[Deployments, dict[str, Any]]:
    """An AgentDeployment served by the release, once no other test's is left for it to serve."""
    await no_other_deployments(k8s, {ns})
    deployments = Deployments(k8s, ns)
    await create_credentials(deployments.core, ns, livekit)
    body = await deployments.create(agent_deployment(name, livekit, f"{AGENTS}:beacon_forever"))
    await deployments.wait_condition(name, "Ready", "True", timeout=120)
    return deployments, body


async def started_in_log(release: OperatorRelease, core: client.CoreV1Api, pod: str, room: str) -> None:
    """Until the operator pod ``pod`` has logged the start of the job in ``room``."""

    async def check() -> bool:
        lines = (await release.logs(core, pod)).splitlines()
        return any(STARTED_LINE.search(line) and f'"room": "{room}"' in line for line in lines)

    await eventually(check, 120, f"{pod} to log the start of the job in {room}")


async def test_the_installed_operator_runs_as_a_pod_and_serves_a_job(
    installed: Installed, k8s: client.ApiClient, ns: str, livekit: LiveKitAccess, lk: api.LiveKitAPI
) -> None:
    core = client.CoreV1Api(k8s)
    release = installed.release
    leader = await release.leader_pod(core)
    assert leader.spec.service_account_name == RELEASE, "the chart's ServiceAccount"
    assert leader.spec.containers[0].image == installed.first
    assert leader.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert leader.status.phase == "Running"

    t0 = time.monotonic()
    deployments, body = await ready(k8s, ns, "helm-job", livekit)
    registered = time.monotonic() - t0
    room = f"helm-{uuid.uuid4().hex[:6]}"
    t1 = time.monotonic()
    await dispatch(lk, body["spec"]["agentName"], room, empty_timeout=600)
    await wait_participant(lk, room, "agent-", timeout=180)
    joined = time.monotonic() - t1
    print(
        f"\n[helm] AgentDeployment created -> Ready (worker registered) {registered:.1f}s; "
        f"dispatch -> agent ACTIVE (cold pod) {joined:.1f}s; first job {registered + joined:.1f}s"
    )
    (pod,) = await deployments.pods("helm-job")
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    # the runner found the operator through the Service's DNS name: the chart's default address
    assert env["AGENT_OPERATOR_ADDRESS"] == release.runner_address
    assert "BEGIN CERTIFICATE" in env["AGENT_OPERATOR_TLS_CA_PEM"], "the runner stream is TLS by default"
    await starts_reported(deployments, "helm-job", 1, timeout=120)

    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    status = await status_equals(deployments, "helm-job", "jobsSucceeded", 1, timeout=120)
    assert status.get("jobsFailed", 0) == 0
    reasons = [e.reason for e in await deployments.events("helm-job")]
    assert {"JobAssigned", "JobStarted", "JobEnded"} <= set(reasons), reasons
    log = await release.logs(core, leader.metadata.name)
    assert f'"room": "{room}"' in log, "the job's log lines are the installed operator pod's"


async def test_an_upgrade_to_a_new_image_keeps_the_live_call_and_serves_the_next(
    installed: Installed, k8s: client.ApiClient, ns: str, livekit: LiveKitAccess, lk: api.LiveKitAPI
) -> None:
    core = client.CoreV1Api(k8s)
    release = installed.release
    before = await release.leader_pod(core)
    deployments, body = await ready(k8s, ns, "helm-live", livekit)
    agent_name = body["spec"]["agentName"]
    live = f"live-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, live, empty_timeout=600)
    agent = await wait_participant(lk, live, "agent-", timeout=180)
    await starts_reported(deployments, "helm-live", 1, timeout=120)

    seconds = await release.upgrade(installed.second)
    print(f"\n[helm] upgrade to {installed.second} rolled out in {seconds:.1f}s while a call was live")
    after = await release.leader_pod(core, timeout=120)
    assert after.metadata.name != before.metadata.name
    assert after.spec.containers[0].image == installed.second

    async def old_pod_gone() -> bool:
        return before.metadata.name not in {p.metadata.name for p in await release.operator_pods(core)}

    await eventually(old_pod_gone, 120, "the old operator pod gone")
    still = await wait_participant(lk, live, "agent-", timeout=10)
    assert still.sid == agent.sid, "the live call kept its agent through the upgrade"
    status = (await deployments.get("helm-live"))["status"]
    assert status.get("jobsFailed", 0) == 0, status

    nxt = f"next-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, agent_name, nxt, empty_timeout=600)
    await wait_participant(lk, nxt, "agent-", timeout=180)
    await started_in_log(release, core, after.metadata.name, nxt)
    # the new operator counts on from the status the old one wrote: the live call's start
    # (adopted, not started again) and this one's
    await starts_reported(deployments, "helm-live", 2, timeout=60)
    again = await wait_participant(lk, live, "agent-", timeout=10)
    assert again.sid == agent.sid
    for room in (live, nxt):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    status = await status_equals(deployments, "helm-live", "jobsSucceeded", 2, timeout=120)
    assert status.get("jobsFailed", 0) == 0, status
    assert status.get("jobsStarted") == 2, status
    ended = [e.message for e in await deployments.events("helm-live") if e.reason == "JobEnded"]
    assert len(ended) == 2, ended
    assert all(" success: " in m for m in ended), ended


async def test_uninstall_leaves_the_crd_and_the_agent_deployments(
    installed: Installed, k8s: client.ApiClient, ns: str, livekit: LiveKitAccess
) -> None:
    release = installed.release
    await ready(k8s, ns, "helm-kept", livekit)

    await release.uninstall()
    assert not await release.installed()
    core = client.CoreV1Api(k8s)

    async def operator_gone() -> bool:
        return not await release.operator_pods(core)

    await eventually(operator_gone, 120, "the operator pods gone")
    with pytest.raises(ApiException) as missing:
        await client.AppsV1Api(k8s).read_namespaced_deployment(RELEASE, release.namespace)
    assert missing.value.status == 404
    crd = await client.ApiextensionsV1Api(k8s).read_custom_resource_definition(
        CRD_FILE.name.removesuffix(".yaml")
    )
    assert crd.metadata.deletion_timestamp is None
    kept = await client.CustomObjectsApi(k8s).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "helm-kept"
    )
    assert kept["metadata"].get("deletionTimestamp") is None
    assert kept["spec"]["agentName"]
