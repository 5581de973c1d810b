"""Pods the real node cannot start, for the tests of what the operator then does (a job pod's
job fails at once, an idle pool pod is replaced with backoff): the case, what the agent
container gets, the reasons the pod status gives, and what the Event must tell to fix."""

from __future__ import annotations

from typing import Any

import pytest

CASES: list[tuple[str, dict[str, Any], tuple[str, ...], str]] = [
    (
        "pull",
        {"image": "localhost/agent-operator-test/no-such-agent:1", "imagePullPolicy": "IfNotPresent"},
        ("ErrImagePull", "ImagePullBackOff"),
        "imagePullSecrets",
    ),
    ("sched", {"resources": {"requests": {"memory": "4000Gi"}}}, ("Unschedulable",), "resources.requests"),
]
IDS = [case[0] for case in CASES]

# the parameters (case, agent, reasons, fix) of a test run once for each case
each_case = pytest.mark.parametrize(("case", "agent", "reasons", "fix"), CASES, ids=IDS)
