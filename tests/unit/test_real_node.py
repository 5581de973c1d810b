"""Pure parts of the real node (devenv/node.py, devenv/containerd.py): the namespace guard,
container IDs from a pod, the cleanup of CNI results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes_asyncio.client import V1ContainerStatus, V1ObjectMeta, V1Pod, V1PodStatus

from devenv import containerd
from devenv.node import NodeError, container_id, require_own_netns

pytestmark = pytest.mark.unit


def test_refused_outside_the_namespace_netns_run_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_OPERATOR_TEST_NETNS_ID", raising=False)
    with pytest.raises(NodeError, match="own network namespace"):
        require_own_netns()
    # an ID leaked from another namespace (a child started elsewhere) is refused too
    monkeypatch.setenv("AGENT_OPERATOR_TEST_NETNS_ID", "net:[1]")
    with pytest.raises(NodeError, match="own network namespace"):
        require_own_netns()


def test_accepted_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_OPERATOR_TEST_NETNS_ID", os.readlink("/proc/self/ns/net"))
    if os.geteuid() != 0:
        with pytest.raises(NodeError, match="root"):
            require_own_netns()
    else:
        require_own_netns()


def _status(name: str, cid: str) -> V1ContainerStatus:
    return V1ContainerStatus(name=name, container_id=cid, image="i", image_id="", ready=True, restart_count=0)


def test_container_id_reads_the_pods_container_status() -> None:
    statuses = [_status("side", "containerd://aaa"), _status("main", "containerd://bbb")]
    pod = V1Pod(metadata=V1ObjectMeta(name="p"), status=V1PodStatus(container_statuses=statuses))
    assert container_id(pod) == "aaa"
    assert container_id(pod, "main") == "bbb"
    with pytest.raises(NodeError, match="no started container other"):
        container_id(pod, "other")
    with pytest.raises(NodeError):
        container_id(V1Pod(metadata=V1ObjectMeta(name="new"), status=V1PodStatus()))


def test_only_our_sandboxes_cni_results_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containerd, "CNI_RESULTS", tmp_path)
    ours, theirs = "4c81" * 16, "c01c" * 16
    for name in (
        f"agent-operator-pods-{ours}-eth0",
        f"cni-loopback-{ours}-lo",
        f"agent-operator-pods-{theirs}-eth0",
    ):
        (tmp_path / name).write_text("{}")
    containerd._remove_cni_results([ours])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"agent-operator-pods-{theirs}-eth0"]
