"""Test environments: the session's, and those started by a test module of its own (beside the
session's), so the session end keeps their logs on failure and removes their work folders like
the session's."""

from __future__ import annotations

import os
from typing import Any

from devenv.environment import TestEnvironment
from devenv.images import find_images
from devenv.node import RealNode

EXTRA: list[TestEnvironment] = []
SESSION: list[TestEnvironment] = []  # the session's environment, once started
# the images job pods run on the node, imported into its containerd at the session start
NODE_IMAGES = ("test-agents",)
IMPORTED: dict[str, str] = {}  # their tags by name, as imported (the sources may change after)


def register(env: TestEnvironment) -> TestEnvironment:
    EXTRA.append(env)
    return env


def session_node() -> RealNode:
    """The session environment's node (none against an external cluster)."""
    node = SESSION[0].node if SESSION else None
    if node is None:
        raise RuntimeError("no node of this run's own in this session (an external cluster?)")
    return node


def runner_host_pid(pod: Any) -> int | None:
    """The host PID of a pod's (first) container once it started: the container's main process
    as containerd tells it (a signal to it reaches the container)."""
    statuses = (pod.status.container_statuses or []) if pod.status else []
    if not statuses or not statuses[0].container_id:
        return None
    return session_node().container_pid(pod)


def node_ip() -> str:
    """Where a pod reaches a server of this test run: the node IP (``devenv/netns-run``)."""
    return os.environ["AGENT_OPERATOR_TEST_NODE_IP"]


def import_node_images(env: TestEnvironment) -> dict[str, str]:
    """Load the built images job pods use into the node's containerd; their tags by name."""
    assert env.node is not None
    images = find_images(list(NODE_IMAGES))
    for name in NODE_IMAGES:
        env.node.import_image(images[name].archive)
        IMPORTED[name] = images[name].tag
    return dict(IMPORTED)


def agent_image() -> str:
    """The test agent image's tag, as imported into the node at the session start."""
    return IMPORTED["test-agents"]
