"""Debian's ``buildah``, daemonless, with its image store under the project's cache.

The store is ``<cache>/buildah/`` (``storage/`` for images and layers, ``run/`` for its
runtime state), passed on every call, so nothing lands in ``/var/lib/containers`` where other
runs could clash with it. Storage driver: ``overlay`` when the store sits on a file system the
kernel can use as an overlay upper layer (ext4 here), ``vfs`` (full copies, slower, always
works) when the store itself is on overlayfs; ``$AGENT_OPERATOR_BUILDAH_DRIVER`` overrides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class BuildahError(RuntimeError):
    """A buildah command failed; the message carries its output."""


def storage_driver(store: Path) -> str:
    forced = os.environ.get("AGENT_OPERATOR_BUILDAH_DRIVER")
    if forced:
        return forced
    store.mkdir(parents=True, exist_ok=True)
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(store)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return "vfs" if fs == "overlayfs" else "overlay"


class Buildah:
    def __init__(self, root: Path) -> None:
        if shutil.which("buildah") is None:
            raise BuildahError("buildah is not installed (Debian package buildah; `make system-packages`)")
        self.root = root
        self.driver = storage_driver(root / "storage")
        self.global_args = [
            f"--root={root / 'storage'}",
            f"--runroot={root / 'run'}",
            f"--storage-driver={self.driver}",
        ]

    def run(self, args: Sequence[str], timeout: float = 3600) -> str:
        """Run ``buildah <args>``; its stdout, or BuildahError with all it printed."""
        proc = subprocess.run(
            ["buildah", *self.global_args, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise BuildahError(
                f"buildah {' '.join(args[:2])} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-8000:]}{proc.stderr[-8000:]}"
            )
        return proc.stdout

    def has_image(self, ref: str) -> bool:
        proc = subprocess.run(
            ["buildah", *self.global_args, "inspect", "--type", "image", ref],
            capture_output=True,
            text=True,
        )
        return proc.returncode == 0

    def build(
        self,
        dockerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        mounts: Sequence[str] = (),
    ) -> None:
        """``buildah build`` as a user's ``docker build -f <dockerfile> -t <tag> <context>``.

        RUN steps share the host's network (``--network host``: pip and apt reach their
        indexes as the host does); base images come from the local store only."""
        args = ["build", "--pull=never", "--network=host", "--layers=false", "--force-rm"]
        args += ["-f", str(dockerfile)]
        args += ["-t", tag]
        for name, value in sorted(build_args.items()):
            args += ["--build-arg", f"{name}={value}"]
        for mount in mounts:
            args += ["--volume", mount]
        self.run([*args, str(context)])

    def import_rootfs(self, tarball: Path, tag: str, config: Sequence[str]) -> None:
        """Commit a root file system tarball as an image (``config``: ``buildah config`` flags)."""
        container = self.run(["from", "scratch"]).strip()
        try:
            self.run(["add", container, str(tarball), "/"])
            self.run(["config", *config, container])
            self.run(["commit", "-q", "--rm", container, tag])
        except BuildahError:
            subprocess.run(["buildah", *self.global_args, "rm", container], capture_output=True)
            raise

    def push_archive(self, tag: str, archive: Path) -> None:
        """Export as an OCI archive whose reference name is the full tag (what
        ``ctr images import`` names the image)."""
        self.run(["push", "-q", tag, f"oci-archive:{archive}:{tag}"])

    def load_archive(self, archive: Path, tag: str) -> None:
        """Put an archive exported earlier back into the store (a base of a rebuild)."""
        self.run(["pull", "-q", f"oci-archive:{archive}:{tag}"])
        if not self.has_image(tag):
            raise BuildahError(f"{archive} did not load as {tag}")

    def remove_image(self, tag: str) -> None:
        """Remove an image from the store if it is there (a dependent image keeps its layers)."""
        subprocess.run(["buildah", *self.global_args, "rmi", tag], capture_output=True, text=True)
