"""The Helm chart (first cut): it lints strictly and renders least-privilege RBAC.

Not yet covered here (issue 6): applying the render to the API server, running the operator
under the chart's ServiceAccount, monitoring objects."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.testenv import binaries
from tests.testenv.environment import REPO_ROOT

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "livekit-agent-operator"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.find("helm")), *args], capture_output=True, text=True, timeout=120)


def render(*sets: str) -> list[dict[str, Any]]:
    out = helm("template", "t", str(CHART), "-n", "ops", *[a for s in sets for a in ("--set", s)])
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_lint_strict() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_schema_refuses_a_typo() -> None:
    out = helm("template", "t", str(CHART), "--set", "typo=1")
    assert out.returncode != 0
    assert "typo" in out.stderr


def test_default_render_is_cluster_wide_and_least_privilege() -> None:
    docs = render()
    kinds = {d["kind"] for d in docs}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"} <= kinds
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    secrets = [r for r in rules if "secrets" in r.get("resources", [])]
    assert secrets
    assert all(r["verbs"] == ["get"] for r in secrets), "secrets: get only, no list/watch"
    assert not [r for r in rules if "*" in r.get("verbs", []) or "*" in r.get("resources", [])]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    assert env.get("AGENT_OPERATOR_RUNNER_ADDRESS") == "t-livekit-agent-operator.ops.svc:50051"


def test_watch_namespaces_render_namespaced_roles() -> None:
    docs = render("watchNamespaces={a,b}")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
