"""Build (or reuse) the real servers the test environment runs.

Each binary comes from a small Go wrapper module under ``gobuild/<name>/`` whose
``go.mod``/``go.sum`` pin the exact upstream release. The build output is cached under
``$AGENT_OPERATOR_CACHE`` (default ``~/.cache/livekit-agent-operator``) in a directory
keyed by a hash of the wrapper module, the build flags and the Go version, so a change
to any of them rebuilds and a warm cache costs a few hashes.

    python -m devenv.binaries            # build or reuse all, print timings
    python -m devenv.binaries --only helm

Without ``--only`` it also fetches (or reuses) the third-party CRDs the tests install
(``devenv/crds.py``), so everything that needs the network is ready before the tests.

A failing build raises with Go's own error output; there is no fallback.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

GOBUILD_DIR = Path(__file__).resolve().parent / "gobuild"

K8S_VERSION = "v1.36.3"
HELM_VERSION = "v3.19.5"


@dataclasses.dataclass(frozen=True)
class GoBinary:
    name: str
    package: str
    module: str
    ldflags: tuple[str, ...] = ()

    @property
    def module_dir(self) -> Path:
        return GOBUILD_DIR / self.module


_K8S_LDFLAGS = (
    f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
    "-X k8s.io/component-base/version.gitMajor=1",
    "-X k8s.io/component-base/version.gitMinor=36",
    "-X k8s.io/component-base/version.gitTreeState=clean",
)

BINARIES: tuple[GoBinary, ...] = (
    GoBinary("etcd", "go.etcd.io/etcd/server/v3", "etcd"),
    GoBinary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "kubernetes", _K8S_LDFLAGS),
    # garbage collection, namespace deletion and default ServiceAccounts are the
    # controller-manager's work; the tests run the real one for those controllers.
    GoBinary(
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kubernetes",
        _K8S_LDFLAGS,
    ),
    # the real node (devenv/node.py): scheduler, kubelet and kube-proxy of the same release
    GoBinary("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler", "kubernetes", _K8S_LDFLAGS),
    GoBinary("kubelet", "k8s.io/kubernetes/cmd/kubelet", "kubernetes", _K8S_LDFLAGS),
    GoBinary("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy", "kubernetes", _K8S_LDFLAGS),
    # cluster DNS for the real node (devenv/dns.py)
    GoBinary("coredns", "github.com/coredns/coredns", "coredns"),
    GoBinary("livekit-server", "github.com/livekit/livekit-server/cmd/server", "livekit-server"),
    GoBinary(
        "helm",
        "helm.sh/helm/v3/cmd/helm",
        "helm",
        (f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
    ),
)


class BuildError(RuntimeError):
    """A Go build failed; the message carries Go's output."""


def cache_root() -> Path:
    env = os.environ.get("AGENT_OPERATOR_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "livekit-agent-operator"


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the `go` command is not on PATH; install Go >= 1.25 first")
    out = subprocess.run(
        [go, "env", "GOVERSION", "GOOS", "GOARCH"], capture_output=True, text=True, check=True
    )
    return " ".join(out.stdout.split())


def cache_key(binary: GoBinary, gover: str) -> str:
    h = hashlib.sha256()
    for fname in ("go.mod", "go.sum"):
        h.update((binary.module_dir / fname).read_bytes())
    h.update(binary.package.encode())
    h.update("\0".join(binary.ldflags).encode())
    h.update(gover.encode())
    return h.hexdigest()[:16]


def binary_path(binary: GoBinary, gover: str | None = None) -> Path:
    gover = gover or go_version()
    return cache_root() / "bin" / f"{binary.name}-{cache_key(binary, gover)}" / binary.name


def build(binary: GoBinary, gover: str, log: bool = True) -> Path:
    """Return the cached binary, building it first when the cache misses."""
    out = binary_path(binary, gover)
    if out.is_file() and os.access(out, os.X_OK):
        if log:
            print(f"[binaries] {binary.name}: cached at {out}", flush=True)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    ldflags = " ".join(("-s", "-w", *binary.ldflags))
    cmd = ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), binary.package]
    if log:
        print(f"[binaries] {binary.name}: building {binary.package} ({' '.join(cmd)})", flush=True)
    start = time.monotonic()
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    proc = subprocess.run(cmd, cwd=binary.module_dir, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise BuildError(
            f"go build of {binary.name} failed after {elapsed:.0f}s (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    tmp.rename(out)
    if log:
        print(f"[binaries] {binary.name}: built in {elapsed:.1f}s -> {out}", flush=True)
    return out


def ensure_all(names: list[str] | None = None, log: bool = True) -> dict[str, Path]:
    gover = go_version()
    selected = [b for b in BINARIES if names is None or b.name in names]
    unknown = set(names or ()) - {b.name for b in BINARIES}
    if unknown:
        raise BuildError(f"unknown binaries: {sorted(unknown)}; known: {[b.name for b in BINARIES]}")
    start = time.monotonic()
    paths = {b.name: build(b, gover, log=log) for b in selected}
    if log:
        print(f"[binaries] all ready in {time.monotonic() - start:.1f}s ({gover})", flush=True)
    return paths


def find(name: str) -> Path:
    """The cached path of a binary, without building (raises if it is missing)."""
    binary = next(b for b in BINARIES if b.name == name)
    path = binary_path(binary)
    if not path.is_file():
        raise BuildError(f"{name} is not built; run `python -m devenv.binaries` first")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", help="build only this binary (repeatable)")
    parser.add_argument("--print-paths", action="store_true", help="print name=path lines at the end")
    args = parser.parse_args(argv)
    try:
        paths = ensure_all(args.only)
        if not args.only:
            from devenv.crds import prometheus_operator_crds

            prometheus_operator_crds(log=True)
    except BuildError as exc:
        print(f"[binaries] BUILD FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    if args.print_paths:
        for name, path in paths.items():
            print(f"{name}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
