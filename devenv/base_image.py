"""The Python base image, made here from Debian packages with ``mmdebstrap``.

No registry is reachable from the development machines, so ``python:3.11-slim`` cannot be
pulled. This image stands in for it as the Dockerfiles' ``PYTHON_IMAGE`` build argument: Debian
bookworm's ``python3.11`` laid out as the Dockerfiles expect (``python`` on PATH, ``python -m
venv`` with pip inside, ``pip``, usable outside a venv too, CA certificates, ``apt-get`` for
images that add Debian packages), with ``LANG=C.UTF-8`` as in the official image. mmdebstrap
takes its packages from this machine's configured apt sources (the files under ``/etc/apt/``,
pasted as they are), so no mirror host is written anywhere here.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

SUITE = "bookworm"  # python3.11 is bookworm's Python
PACKAGES = (
    "python3.11",
    "python3.11-venv",  # ensurepip's wheels: `python -m venv` gets pip
    "python3-pip",
    "python-is-python3",  # `python`
    "ca-certificates",
)
# as python:3.11-slim: no docs or man pages (copyright files stay)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
)
# as python:3.11-slim: `pip install` outside a venv is allowed (Debian marks its Python as
# externally managed, which would refuse it)
HOOKS = ('--customize-hook=rm -f "$1/usr/lib/python3.11/EXTERNALLY-MANAGED"',)
CONFIG = (
    "--env=LANG=C.UTF-8",
    "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--cmd=python3",
)


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[Path]:
    """This machine's active apt source files."""
    files = [etc_apt / "sources.list"] if (etc_apt / "sources.list").is_file() else []
    files += sorted(p for p in (etc_apt / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    if not files:
        raise FileNotFoundError(f"no apt sources under {etc_apt}; mmdebstrap needs one")
    return files


def mmdebstrap_version() -> str:
    out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def base_key(sources: list[Path]) -> str:
    """Hash of what the base image is made from (the package set can move with the sources'
    snapshot; a new Debian point release is picked up by removing the cached image)."""
    h = hashlib.sha256()
    h.update(f"{SUITE}\0{PACKAGES}\0{DPKG_OPTIONS}\0{HOOKS}\0{CONFIG}\0".encode())
    h.update(mmdebstrap_version().encode())
    for src in sources:
        h.update(src.read_bytes())
    return h.hexdigest()[:12]


def make_rootfs(tarball: Path, sources: list[Path]) -> None:
    """Run mmdebstrap into a root file system tarball."""
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        '--aptopt=APT::Install-Recommends "false"',
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        *HOOKS,
        "--format=tar",
        SUITE,
        str(tarball),
        *map(str, sources),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}")
