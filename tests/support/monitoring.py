"""The chart's monitoring objects as tests use them: the dashboard's panel queries and the
alert rules, read from the same files the chart ships (no copies)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devenv import binaries
from devenv.environment import REPO_ROOT

CHART = REPO_ROOT / "charts" / "livekit-agent-operator"
DASHBOARD = CHART / "files" / "dashboard.json"


@dataclasses.dataclass(frozen=True)
class PanelQuery:
    panel: str
    unit: str
    expr: str
    legend: str


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries(namespace: str, deployment: str, rate_interval: str) -> list[PanelQuery]:
    """Every panel target, with the dashboard variables filled in as Grafana would."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$namespace", namespace)
                .replace("$deployment", deployment)
                .replace("$__rate_interval", rate_interval)
            )
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            out.append(PanelQuery(panel["title"], unit, expr, target.get("legendFormat", "")))
    return out


def variable_selectors(namespace: str) -> list[tuple[str, str]]:
    """(label, series selector) of each ``label_values(selector, label)`` template variable."""
    out = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {var['name']}: unsupported query {query}"
        out.append((match.group(2), match.group(1).replace("$namespace", namespace)))
    return out


def render_alert_rules(release: str, namespace: str, **values: str) -> dict[str, Any]:
    """The PrometheusRule the chart renders, as a plain Prometheus rule file body."""
    sets = ["prometheusRule.enabled=true", *[f"{k}={v}" for k, v in values.items()]]
    out = subprocess.run(
        [
            str(binaries.find("helm")),
            "template",
            release,
            str(CHART),
            "-n",
            namespace,
            "--show-only",
            "templates/prometheusrule.yaml",
            *[a for s in sets for a in ("--set", s)],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rule = yaml.safe_load(out.stdout)
    assert rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def alert_rules(rule_file: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rule_file["groups"] for r in g["rules"] if "alert" in r]


def alert_signal(expr: str) -> str:
    """The expression without its final threshold line (files/alerts.yaml's convention)."""
    lines = expr.strip().splitlines()
    assert re.fullmatch(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*", lines[-1]), f"no threshold line: {expr}"
    return "\n".join(lines[:-1])


def write_rule_file(rule_file: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(rule_file, sort_keys=False))
    return path
