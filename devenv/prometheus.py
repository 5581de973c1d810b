"""A real Prometheus server (Debian's ``prometheus`` package) for end-to-end tests.

It scrapes given targets every second and evaluates rule files every second; the test asks it
questions over its HTTP API, the way Grafana and Alertmanager would.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from devenv.procs import ServerProcess, free_port, http_ok, wait_until


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error."""


def binary(name: str = "prometheus") -> str:
    """The path of ``prometheus`` or ``promtool`` (``AGENT_OPERATOR_TEST_PROMETHEUS_DIR`` first)."""
    override = os.environ.get("AGENT_OPERATOR_TEST_PROMETHEUS_DIR")
    found = str(Path(override) / name) if override else shutil.which(name)
    if not found or not Path(found).is_file():
        raise FileNotFoundError(
            f"{name} not found: install Debian's prometheus package (`apt-get install prometheus`, "
            "as .ci/run does) or set AGENT_OPERATOR_TEST_PROMETHEUS_DIR"
        )
    return found


@dataclasses.dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port serving /metrics
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


class PrometheusServer:
    def __init__(self, workdir: Path, targets: list[ScrapeTarget], rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ServerProcess | None = None

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": t.job,
                    # as the chart's ServiceMonitor does: the operator's own `namespace` label
                    # (the AgentDeployment's) wins over the target's
                    "honor_labels": True,
                    "static_configs": [{"targets": [t.address], "labels": t.labels}],
                }
                for t in self.targets
            ],
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.process = ServerProcess(
            "prometheus",
            [
                binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.workdir,
        )
        self.process.start()
        wait_until(lambda: http_ok(f"{self.url}/-/ready"), 60, "prometheus ready", self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    async def _get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}{path}", params=params) as resp:
            body = await resp.json(content_type=None)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector (raises on a PromQL error)."""
        data = await self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = await self._get(
            "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    async def rules(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/rules")
        return [rule for group in data["groups"] for rule in group["rules"]]

    async def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing."""
        data = await self._get("/api/v1/alerts")
        active: list[dict[str, Any]] = data["alerts"]
        return active

    async def targets_up(self) -> bool:
        data = await self._get("/api/v1/targets")
        active = data["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
