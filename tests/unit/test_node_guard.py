"""The real node refuses to touch the machine's own network namespace (devenv/node.py)."""

from __future__ import annotations

import os

import pytest

from devenv.node import NodeError, require_own_netns

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
