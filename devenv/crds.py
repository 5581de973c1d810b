"""Third-party CRDs the tests install: the Prometheus Operator's ServiceMonitor and PrometheusRule.

They come from the Prometheus Operator's Go module (``example/prometheus-operator-crd/``),
fetched with ``go mod download`` (checked against the Go checksum database) and copied to
``$AGENT_OPERATOR_CACHE/crds/prometheus-operator-<version>/``. ``make binaries`` prefetches
them: the test network namespace has no route out, so a cold cache cannot be filled from a
test (a warm Go module cache still can).

    python -m devenv.crds      # fetch or reuse, print the paths
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devenv.binaries import BuildError, cache_root

PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
_CRD_DIR = "example/prometheus-operator-crd"
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)


def crd_dir() -> Path:
    return cache_root() / "crds" / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}"


def prometheus_operator_crds(log: bool = False) -> list[Path]:
    """The cached CRD files, fetched first when the cache misses (raises BuildError on failure)."""
    dest = crd_dir()
    paths = [dest / name for name in PROMETHEUS_OPERATOR_CRDS]
    if all(p.is_file() for p in paths):
        if log:
            print(f"[crds] prometheus-operator {PROMETHEUS_OPERATOR_VERSION}: cached at {dest}", flush=True)
        return paths
    go = shutil.which("go")
    if go is None:
        raise BuildError("the `go` command is not on PATH; it fetches the Prometheus Operator CRDs")
    ref = f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"
    if log:
        print(f"[crds] fetching {ref} (go mod download)", flush=True)
    # from an empty folder: outside any module, so no go.mod of ours plays a part
    with tempfile.TemporaryDirectory() as empty:
        proc = subprocess.run(
            [go, "mod", "download", "-json", ref], cwd=empty, capture_output=True, text=True, timeout=600
        )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "Error" in info or "Dir" not in info:
        raise BuildError(
            f"go mod download {ref} failed (exit {proc.returncode}): {info.get('Error', '')}\n{proc.stderr}"
            "\n(run `make binaries` outside the test network namespace: it has no route out)"
        )
    source = Path(info["Dir"]) / _CRD_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in zip(PROMETHEUS_OPERATOR_CRDS, paths, strict=True):
        tmp = path.with_name(path.name + ".partial")
        shutil.copyfile(source / name, tmp)
        tmp.rename(path)
    if log:
        print(f"[crds] prometheus-operator {PROMETHEUS_OPERATOR_VERSION}: -> {dest}", flush=True)
    return paths


def main() -> int:
    try:
        paths = prometheus_operator_crds(log=True)
    except BuildError as exc:
        print(f"[crds] FETCH FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
