"""Draw the chart's Grafana dashboard with matplotlib from a real Prometheus (Grafana itself
cannot run here). Used by ``make dashboard-image`` through the Prometheus e2e test."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from devenv.prometheus import PrometheusServer
from tests.support.monitoring import dashboard, panel_queries

UNIT_SCALE = {"s": (1000.0, "ms")}


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or "value"


def dashed(panel: dict[str, Any]) -> list[re.Pattern[str]]:
    """The series names a panel's overrides draw dashed (Grafana's ``custom.lineStyle``)."""
    out = []
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        styles = [p for p in override.get("properties", []) if p.get("id") == "custom.lineStyle"]
        if matcher.get("id") == "byRegexp" and any(p["value"].get("fill") == "dash" for p in styles):
            out.append(re.compile(matcher["options"]))
    return out


async def render_dashboard(
    prom: PrometheusServer, namespace: str, start: float, end: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = panel_queries(namespace, ".*", "15s")
    panels = {p["title"]: p for p in dashboard()["panels"]}
    titles = list(panels)
    cols = 3
    rows = math.ceil(len(titles) / cols)
    plt.style.use("dark_background")
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    step = max(1.0, (end - start) / 300)
    for ax, title in zip(axes.flat, titles, strict=False):
        scale, unit = 1.0, ""
        dashes = dashed(panels[title])
        for q in (q for q in queries if q.panel == title):
            scale, unit = UNIT_SCALE.get(q.unit, (1.0, ""))
            series: list[dict[str, Any]] = await prom.query_range(q.expr, start, end, step)
            for s in series:
                xs = [float(t) - start for t, _ in s["values"]]
                ys = [float(v) * scale for _, v in s["values"]]
                name = legend(q.legend, s["metric"])
                style = "--" if any(d.fullmatch(name) for d in dashes) else "-"
                ax.plot(xs, ys, linewidth=1.4, linestyle=style, label=name)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel("seconds into the run", fontsize=8)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.2)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    fig.suptitle(f"LiveKit agent operator: one e2e run, namespace {namespace}", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
