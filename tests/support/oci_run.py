"""Run a command in an image exported as an OCI archive, with ``runc`` and nothing else.

The archive's root file system is unpacked once (``devenv.oci_archive``) and run the way a
restricted pod runs it: as the image's own user, read-only root, an empty ``/tmp`` tmpfs, no
capabilities, no new privileges, no network (a fresh network namespace)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devenv.oci_archive import image_config, unpack_rootfs


class UnpackedImage:
    def __init__(self, archive: Path, workdir: Path) -> None:
        self.archive = archive
        self.config: dict[str, Any] = image_config(archive)
        self.bundle = workdir
        unpack_rootfs(archive, workdir / "rootfs")

    def user(self) -> tuple[int, int]:
        uid, _, gid = str(self.config.get("User", "0")).partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ValueError(f"image user {self.config.get('User')!r} is not numeric")
        return int(uid), int(gid or uid)

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    def run(self, argv: Sequence[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (a full command line: prepend ``entrypoint`` to run the image's own)."""
        spec_path = self.bundle / "config.json"
        spec_path.unlink(missing_ok=True)
        subprocess.run(["runc", "spec", "--bundle", str(self.bundle)], check=True)
        spec = json.loads(spec_path.read_text())
        uid, gid = self.user()
        process = spec["process"]
        process.update(
            terminal=False,
            user={"uid": uid, "gid": gid},
            args=list(argv),
            env=list(self.config.get("Env") or []),
            cwd=self.config.get("WorkingDir") or "/",
            noNewPrivileges=True,
        )
        process["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "ambient")}
        spec["root"] = {"path": "rootfs", "readonly": True}
        spec["mounts"].append(
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            }
        )
        spec_path.write_text(json.dumps(spec))
        name = f"image-test-{uuid.uuid4().hex[:12]}"
        try:
            return subprocess.run(
                ["runc", "run", "--bundle", str(self.bundle), name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        finally:
            subprocess.run(["runc", "delete", "--force", name], capture_output=True)
