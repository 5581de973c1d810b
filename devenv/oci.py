"""Tiny OCI images written locally, with no registry and no daemon.

An image here is a single uncompressed tar layer built from files of this machine, a config
and a manifest, written as an OCI image-layout archive (``oci-layout``, ``index.json``,
``blobs/sha256/…``) that ``ctr -n k8s.io images import`` takes. The real node uses it for the
sandbox (pause) image and for the smoke tests' busybox image.

    write_image(Path("pause.tar"), "localhost/agent-operator/pause:local",
                files={"/pause": Path("build/pause")}, entrypoint=["/pause"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

# fixed timestamps keep the layer (and so the image id) the same for the same inputs
_MTIME = 0


@dataclasses.dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def _dir_entry(tar: tarfile.TarFile, name: str, seen: set[str], mode: int = 0o755) -> None:
    """Add ``name`` (a directory) and its missing parents."""
    parts = Path(name).parts if name not in ("", ".") else ()
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in seen:
            continue
        seen.add(d)
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = mode if i == len(parts) else 0o755
        info.mtime = _MTIME
        tar.addfile(info)


def layer_tar(
    files: Mapping[str, Path], symlinks: Mapping[str, str] | None = None, dirs: Sequence[str] = ()
) -> bytes:
    """An uncompressed layer: each ``files`` target path (absolute in the image) gets the bytes and
    mode of its source; ``symlinks`` maps an image path to its link target; ``dirs`` are empty
    directories (mode 1777 for ``/tmp``, 0755 otherwise)."""
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for target in dirs:
            _dir_entry(tar, target.strip("/"), seen, 0o1777 if target == "/tmp" else 0o755)
        for target, source in sorted(files.items()):
            name = target.lstrip("/")
            _dir_entry(tar, str(Path(name).parent), seen)
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = source.stat().st_mode & 0o7777
            info.mtime = _MTIME
            tar.addfile(info, io.BytesIO(data))
        for target, link in sorted((symlinks or {}).items()):
            name = target.lstrip("/")
            _dir_entry(tar, str(Path(name).parent), seen)
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = link
            info.mtime = _MTIME
            tar.addfile(info)
    return buf.getvalue()


def write_image(
    archive: Path,
    ref: str,
    *,
    files: Mapping[str, Path],
    symlinks: Mapping[str, str] | None = None,
    dirs: Sequence[str] = (),
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    user: str = "",
    env: Sequence[str] = ("PATH=/bin",),
) -> str:
    """Write a one-layer image named ``ref`` (a full reference, e.g. ``localhost/x/y:tag``) as an
    OCI archive; return the manifest digest."""
    layer = Blob(MEDIA_LAYER, layer_tar(files, symlinks, dirs))
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": list(env),
            "Entrypoint": list(entrypoint) or None,
            "Cmd": list(cmd) or None,
            "User": user,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created_by": "devenv.oci"}],
    }
    config_blob = Blob(MEDIA_CONFIG, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor()],
    }
    manifest_blob = Blob(MEDIA_MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            manifest_blob.descriptor(
                platform={"architecture": "amd64", "os": "linux"},
                annotations={
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            )
        ],
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="w") as tar:
        entries: list[tuple[str, bytes]] = [
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ]
        entries += [
            (f"blobs/sha256/{b.digest.split(':', 1)[1]}", b.data) for b in (layer, config_blob, manifest_blob)
        ]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = _MTIME
            tar.addfile(info, io.BytesIO(data))
    return manifest_blob.digest


def build_pause(out: Path, source: Path) -> Path:
    """Compile kubernetes' ``pause.c`` statically (the sandbox image's only file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["gcc", "-Os", "-static", "-DVERSION=local", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gcc could not build {source}:\n{proc.stdout}{proc.stderr}")
    subprocess.run(["strip", str(out)], check=True)
    return out


BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
BUSYBOX_APPLETS = (
    "sh",
    "test",
    "nc",
    "printf",
    "cat",
    "echo",
    "id",
    "touch",
    "sleep",
    "tail",
    "head",
    "ls",
    "grep",
    "wget",
    "nslookup",
    "httpd",
    "mkdir",
    "true",
    "dd",
    "kill",
)


def busybox_image(archive: Path, ref: str) -> str:
    """A scratch image holding only a static busybox with its applet links, and an empty /tmp."""
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing: install Debian's busybox-static (make system-packages)")
    return write_image(
        archive,
        ref,
        files={"/bin/busybox": BUSYBOX},
        symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
        dirs=("/tmp",),
        cmd=("sh",),
    )
