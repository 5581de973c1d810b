"""Pure helpers of the test environment (build cache keys)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from devenv import binaries

pytestmark = pytest.mark.unit


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
