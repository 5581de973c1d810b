"""The OCI archive writer of the real node (devenv/oci.py): a layout ``ctr images import`` takes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from devenv import oci

pytestmark = pytest.mark.unit


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_archive_is_an_oci_layout_whose_digests_match(tmp_path: Path) -> None:
    exe = tmp_path / "tool"
    exe.write_bytes(b"\x7fELF not really")
    exe.chmod(0o755)
    digest = oci.write_image(
        tmp_path / "img.tar",
        "localhost/x/tool:1",
        files={"/bin/tool": exe},
        symlinks={"/bin/t": "tool"},
        dirs=("/tmp",),
        entrypoint=["/bin/tool"],
        user="65532",
    )
    blobs = _members(tmp_path / "img.tar")
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(blobs["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/x/tool:1"
    manifest = json.loads(blobs[f"blobs/sha256/{digest.split(':')[1]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    (layer_desc,) = manifest["layers"]
    assert config["rootfs"]["diff_ids"] == [layer_desc["digest"]]  # uncompressed: diff id == digest
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    assert config["config"]["User"] == "65532"
    layer = blobs[f"blobs/sha256/{layer_desc['digest'].split(':')[1]}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("bin/tool").read() == b"\x7fELF not really"  # type: ignore[union-attr]
    assert members["bin/tool"].mode == 0o755
    assert members["bin/t"].issym()
    assert members["bin/t"].linkname == "tool"
    assert members["tmp"].isdir()
    assert members["tmp"].mode == 0o1777


def test_same_inputs_give_the_same_image(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    first = oci.write_image(tmp_path / "a.tar", "localhost/x/y:1", files={"/f": src})
    second = oci.write_image(tmp_path / "b.tar", "localhost/x/y:1", files={"/f": src})
    src.write_text("y")
    assert first == second
    assert oci.write_image(tmp_path / "c.tar", "localhost/x/y:1", files={"/f": src}) != first
