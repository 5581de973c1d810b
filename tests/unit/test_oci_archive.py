"""Reading OCI image archives (devenv/oci_archive.py) on a two-layer archive made here: layers
apply in order, whiteouts delete, an opaque directory hides what lay below, modes survive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from devenv.images import pip_settings
from devenv.oci_archive import image_config, layer_paths, reference, unpack_rootfs, unpacked_size

pytestmark = pytest.mark.unit

Entry = tuple[str, bytes | None, int]  # name, content (None: a directory), mode


def layer(entries: list[Entry]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def write_archive(path: Path, layers: list[bytes], config: dict[str, object], ref: str) -> None:
    blobs: dict[str, bytes] = {}

    def add(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    config_blob = add(json.dumps({"config": config, "rootfs": {"type": "layers"}}).encode())
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **add(b)} for b in layers],
    }
    entry = add(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **entry,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    with tarfile.open(path, "w") as tar:
        for name, data in [("index.json", json.dumps(index).encode())] + [
            (f"blobs/sha256/{d.split(':')[1]}", b) for d, b in blobs.items()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    lower = layer(
        [
            ("tmp", None, 0o1777),
            ("etc", None, 0o755),
            ("etc/keep.conf", b"keep\n", 0o644),
            ("etc/gone.conf", b"gone\n", 0o644),
            ("opt", None, 0o755),
            ("opt/old", None, 0o755),
            ("opt/old/a.txt", b"a" * 10, 0o644),
        ]
    )
    upper = layer(
        [
            ("etc/.wh.gone.conf", b"", 0o644),
            ("opt/old/b.txt", b"b" * 5, 0o755),  # before the marker: still this layer's own
            ("opt/old/.wh..wh..opq", b"", 0o644),
        ]
    )
    path = tmp_path / "image.oci.tar"
    write_archive(path, [lower, upper], {"User": "65532:65532", "Entrypoint": ["x"]}, "docker.io/t/x:1")
    return path


def test_layers_apply_in_order_with_whiteouts_and_modes(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    unpack_rootfs(archive, root)
    assert (root / "etc" / "keep.conf").read_text() == "keep\n"
    assert not (root / "etc" / "gone.conf").exists(), "a whiteout deletes the lower file"
    assert sorted(os.listdir(root / "opt" / "old")) == ["b.txt"], "an opaque dir hides the lower ones"
    assert not list(root.rglob(".wh.*"))
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777, "a sticky world-writable /tmp stays one"
    assert (root / "opt" / "old" / "b.txt").stat().st_mode & 0o777 == 0o755


def test_config_reference_layers_and_size(archive: Path) -> None:
    assert image_config(archive) == {"User": "65532:65532", "Entrypoint": ["x"]}
    assert reference(archive) == "docker.io/t/x:1"
    assert layer_paths(archive, -1) == ["etc/.wh.gone.conf", "opt/old/b.txt", "opt/old/.wh..wh..opq"]
    assert unpacked_size(archive) == 5 + 5 + 10 + 5  # regular files of every layer


def test_a_layer_member_outside_the_root_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.oci.tar"
    write_archive(path, [layer([("../escape.txt", b"x", 0o644)])], {}, "docker.io/t/bad:1")
    with pytest.raises(ValueError, match="leaves the root"):
        unpack_rootfs(path, tmp_path / "rootfs")
    assert not (tmp_path / "escape.txt").exists()


def test_pip_settings_read_this_pips_effective_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example.com/simple")
    monkeypatch.setenv("PIP_TRUSTED_HOST", "pypi.example.com")
    settings = pip_settings()
    assert settings["index-url"] == "https://pypi.example.com/simple"
    assert settings["trusted-host"] == "pypi.example.com"
