"""Pure helpers of the test environment (the process kubelet's env and path handling, build cache keys)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from devenv import binaries
from devenv.kubelet import _expand, _field, _remap

pytestmark = pytest.mark.unit


def test_remap_rewrites_paths_under_a_mount_only(tmp_path: Path) -> None:
    mounts = {"/var/run/secrets/x": Path("/pod/vol"), "/var/run/nowhere": Path("/pod/run")}
    assert _remap("/var/run/secrets/x/token", mounts) == "/pod/vol/token"
    assert _remap("/var/run/nowhere/other", mounts) == "/pod/run/other"
    assert _remap("/var/running", mounts) == "/var/running"
    assert _remap("--flag=/var/run/nowhere", mounts) == "--flag=/var/run/nowhere"


def test_remap_leaves_host_paths_alone(tmp_path: Path) -> None:
    """A checkout under /tmp while the pod mounts an emptyDir at /tmp: the interpreter stays."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    mounts = {str(tmp_path): Path("/pod/tmp")}
    assert _remap(str(python), mounts) == str(python)
    assert _remap(str(tmp_path / "scratch.txt"), mounts) == "/pod/tmp/scratch.txt"


def test_remap_looks_at_a_path_list_path_by_path(tmp_path: Path) -> None:
    """A PYTHONPATH of two checkout folders under /tmp (a clone there) stays the host's; a
    path of the pod's own /tmp in the list is still pointed at the pod's copy."""
    example, repo = tmp_path / "repo" / "example", tmp_path / "repo"
    example.mkdir(parents=True)
    mounts = {str(tmp_path): Path("/pod/tmp")}
    listed = f"{example}:{repo}"
    assert _remap(listed, mounts) == listed
    assert _remap(f"{repo}:{tmp_path}/cache", mounts) == f"{repo}:/pod/tmp/cache"
    assert _remap("ws://10.254.0.1:7880", mounts) == "ws://10.254.0.1:7880"


def test_expand_dependent_env() -> None:
    assert _expand("http://$(HOST):$(PORT)/x", {"HOST": "h", "PORT": "1"}) == "http://h:1/x"
    assert _expand("$(MISSING)", {}) == "$(MISSING)"


def test_field_refs() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"}},
        "spec": {"nodeName": "node"},
    }
    assert _field(pod, "metadata.name") == "p"
    assert _field(pod, "metadata.uid") == "u"
    assert _field(pod, "metadata.labels['a']") == "b"
    assert _field(pod, "spec.nodeName") == "node"
    with pytest.raises(RuntimeError, match="not supported"):
        _field(pod, "status.phase")


def test_cache_key_follows_the_pinned_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = binaries.GOBUILD_DIR / "helm"
    dst = tmp_path / "helm"
    shutil.copytree(src, dst)
    monkeypatch.setattr(binaries, "GOBUILD_DIR", tmp_path)
    helm = next(b for b in binaries.BINARIES if b.name == "helm")
    before = binaries.cache_key(helm, "go1.26 linux amd64")
    assert before == binaries.cache_key(helm, "go1.26 linux amd64")
    assert before != binaries.cache_key(helm, "go1.27 linux amd64")
    (dst / "go.mod").write_text((dst / "go.mod").read_text() + "\n// changed\n")
    assert before != binaries.cache_key(helm, "go1.26 linux amd64")
    other = dataclasses.replace(helm, ldflags=("-X a=b",))
    assert binaries.cache_key(other, "go1.26 linux amd64") != binaries.cache_key(helm, "go1.26 linux amd64")
