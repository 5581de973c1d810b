"""Read an OCI image archive (what ``buildah push ... oci-archive:`` writes): its image config,
its unpacked size, and its root file system unpacked into a directory (layers applied in order,
whiteouts honoured), so a test can run the image with ``runc`` exactly as it was exported."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any, cast

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _blob(archive: tarfile.TarFile, digest: str) -> IO[bytes]:
    algo, _, hexdigest = digest.partition(":")
    member = archive.extractfile(f"blobs/{algo}/{hexdigest}")
    if member is None:
        raise ValueError(f"blob {digest} missing from the archive")
    return member


def _manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    index = json.load(_blob_or_file(archive, "index.json"))
    (entry,) = index["manifests"]
    return cast(dict[str, Any], json.load(_blob(archive, entry["digest"])))


def _blob_or_file(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    member = archive.extractfile(name)
    if member is None:
        raise ValueError(f"{name} missing from the archive")
    return member


def reference(path: Path) -> str:
    """The image reference the archive is named with (``org.opencontainers.image.ref.name``)."""
    with tarfile.open(path) as archive:
        index = json.load(_blob_or_file(archive, "index.json"))
    (entry,) = index["manifests"]
    return str(entry.get("annotations", {}).get("org.opencontainers.image.ref.name", ""))


def image_config(path: Path) -> dict[str, Any]:
    """The image's OCI config ``config`` section (User, Entrypoint, Env, WorkingDir, ...)."""
    with tarfile.open(path) as archive:
        manifest = _manifest(archive)
        config = json.load(_blob(archive, manifest["config"]["digest"]))
    return cast(dict[str, Any], config.get("config", {}))


def unpacked_size(path: Path) -> int:
    """Bytes of regular files over all layers, as a container runtime stores them."""
    total = 0
    with tarfile.open(path) as archive:
        for layer in _manifest(archive)["layers"]:
            with tarfile.open(fileobj=_blob(archive, layer["digest"]), mode="r|*") as tar:
                total += sum(m.size for m in tar if m.isfile())
    return total


def layer_paths(path: Path, index: int) -> list[str]:
    """The paths one layer (``index`` into the manifest's layers, -1 the top) adds or changes."""
    with tarfile.open(path) as archive:
        layer = _manifest(archive)["layers"][index]
        with tarfile.open(fileobj=_blob(archive, layer["digest"]), mode="r|*") as tar:
            return [member.name for member in tar]


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def unpack_rootfs(path: Path, dest: Path) -> None:
    """Apply the image's layers into ``dest`` (which must not exist yet)."""
    dest.mkdir(parents=True)
    with tarfile.open(path) as archive:
        for layer in _manifest(archive)["layers"]:
            with tarfile.open(fileobj=_blob(archive, layer["digest"]), mode="r|*") as tar:
                added: set[Path] = set()  # by this layer, which its own whiteouts never hide
                for member in tar:
                    name = Path(member.name)
                    if name.is_absolute() or ".." in name.parts:
                        raise ValueError(f"layer member {member.name!r} leaves the root file system")
                    parent = dest / name.parent
                    if name.name == _OPAQUE:
                        for child in parent.iterdir() if parent.is_dir() else ():
                            if child not in added:
                                _remove(child)
                        continue
                    if name.name.startswith(_WHITEOUT):
                        _remove(parent / name.name[len(_WHITEOUT) :])
                        continue
                    target = dest / name
                    if target.exists() and not (member.isdir() and target.is_dir()):
                        _remove(target)
                    # exact owners and modes (a sticky world-writable /tmp stays one, which the
                    # "tar" and "data" filters would not keep): these are images built here
                    tar.extract(member, dest, filter="fully_trusted")
                    added.add(target)
