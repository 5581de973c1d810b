"""Build (or reuse) the container images from our Dockerfiles, with no daemon and no registry.

    python -m devenv.images      # `make images`: build or reuse all, print time, size, cache

Five images, each built as a user builds it and exported as an OCI archive under
``<cache>/images/`` (what the local cluster imports with ``ctr -n k8s.io images import``):

* ``python``: the base, made from Debian packages (``devenv/base_image.py``);
* ``runner``: ``jobrunner/Dockerfile``, ``PYTHON_IMAGE`` set to the base;
* ``operator``: ``operator/Dockerfile``, likewise;
* ``test-agents``: ``tests/agents/Dockerfile``, ``FROM`` the runner (the test agents, the voice
  extras and espeak-ng; also runs the shipped ``agent_jobrunner.examples.voice``);
* ``weather-agent``: the livekit-agents example, ``jobrunner/examples/weather-agent/Dockerfile``
  in its own folder as the build context, ``FROM`` the runner, as a user builds an agent image.
* ``voice-agent``: ``jobrunner/examples/voice-agent/Dockerfile``, ``FROM`` the runner: the shipped
  voice agent packaged as a user packages theirs (what ``make demo`` runs).

Tags are real and name their inputs: ``docker.io/livekit-agent-operator/runner:0.1.0-<key>``,
the key hashing the Dockerfile, the files it copies, its build arguments and its base's key
(``devenv/image_key.py``). An image is rebuilt only when its key changes. pip inside a build
reaches its index with this machine's pip settings, passed as build arguments (``PIP_*``) the
way a private index is; a CA bundle pip trusts is mounted read-only into the build's RUN steps.
Building needs the network: run it outside the test network namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

from devenv import base_image
from devenv.binaries import cache_root
from devenv.buildah import Buildah, BuildahError
from devenv.image_key import input_key
from devenv.oci_archive import unpacked_size

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "docker.io/livekit-agent-operator"
# A CA bundle from this machine's pip settings is bind-mounted read-only over the base image's
# own bundle (Debian's ca-certificates, as in python:3.11-slim) in the builds' RUN steps: an
# existing file, so the mount leaves no mount point behind in the image.
BUILD_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"
# archives kept per image (the newest; a rebuild drops older ones). Several checkouts share one
# cache, each with its own keys, so this keeps theirs too (about 0.6 GB per set of images).
KEEP_GENERATIONS = 8


class ImageBuildError(RuntimeError):
    """An image could not be built or is missing; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    tag: str  # full reference, also the archive's ref name
    archive: Path
    cached: bool
    build_seconds: float  # of the build that made the archive
    archive_bytes: int
    unpacked_bytes: int


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: Path  # in the build context (the repository root)
    base_arg: str  # the build argument naming the image it starts from
    base: str  # name of that image
    context: Path = Path()  # the build context, in the repository


IMAGES = (
    ImageSpec("runner", Path("jobrunner/Dockerfile"), "PYTHON_IMAGE", "python"),
    ImageSpec("operator", Path("operator/Dockerfile"), "PYTHON_IMAGE", "python"),
    ImageSpec("test-agents", Path("tests/agents/Dockerfile"), "RUNNER_IMAGE", "runner"),
    ImageSpec(
        "weather-agent",
        Path("jobrunner/examples/weather-agent/Dockerfile"),
        "RUNNER_IMAGE",
        "runner",
        context=Path("jobrunner/examples/weather-agent"),
    ),
    ImageSpec("voice-agent", Path("jobrunner/examples/voice-agent/Dockerfile"), "RUNNER_IMAGE", "runner"),
)
NAMES = ("python", *(spec.name for spec in IMAGES))


def images_dir() -> Path:
    return cache_root() / "images"


def version(repo: Path = REPO_ROOT) -> str:
    with (repo / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """This machine's effective pip settings (``pip config list``; environment wins)."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        match = re.match(r"^(:env:|global|install)\.([\w-]+)='(.*)'$", line)
        if match:
            (env if match[1] == ":env:" else settings)[match[2]] = match[3]
    return settings | env


def pip_build_args(settings: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The build arguments and mounts that give pip in a build what the host's pip uses to
    reach its index: index URLs, trusted hosts and a CA bundle (TLS here is intercepted by an
    egress proxy whose CA only the host's bundle holds). Host paths (``find-links``) and
    client tuning are not passed: a build must not depend on them."""
    args = {
        f"PIP_{key.upper().replace('-', '_')}": settings[key]
        for key in ("index-url", "extra-index-url", "trusted-host")
        if key in settings
    }
    mounts = []
    cert = settings.get("cert")
    if cert:
        if not Path(cert).is_file():
            raise ImageBuildError(f"pip's configured CA bundle {cert} does not exist")
        args["PIP_CERT"] = BUILD_CA_PATH
        mounts.append(f"{cert}:{BUILD_CA_PATH}:ro")
    return args, mounts


def _record_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".json")


def _cached(name: str, tag: str, archive: Path) -> Image | None:
    record = _record_path(archive)
    if not (archive.is_file() and record.is_file()):
        return None
    data = json.loads(record.read_text())
    return Image(
        name, tag, archive, True, data["build_seconds"], data["archive_bytes"], data["unpacked_bytes"]
    )


def _export(buildah: Buildah, name: str, tag: str, archive: Path, seconds: float) -> Image:
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    buildah.push_archive(tag, partial)
    image = Image(name, tag, archive, False, seconds, partial.stat().st_size, unpacked_size(partial))
    partial.rename(archive)
    record = {k: v for k, v in dataclasses.asdict(image).items() if k.endswith(("seconds", "bytes"))}
    _record_path(archive).write_text(json.dumps(record | {"tag": tag}) + "\n")
    return image


def _in_store(buildah: Buildah, image: Image) -> None:
    if not buildah.has_image(image.tag):
        buildah.load_archive(image.archive, image.tag)


def base_target() -> tuple[str, Path]:
    """The base image's tag and archive for this machine's apt sources."""
    key = base_image.base_key(base_image.apt_sources())
    return f"{REPOSITORY}/python:3.11-{key}", images_dir() / f"python-{key}.oci.tar"


def image_target(
    spec: ImageSpec, parent_tag: str, pip_args: dict[str, str], context: Path = REPO_ROOT
) -> tuple[dict[str, str], str, Path]:
    """The build arguments, tag and archive of ``spec`` built from the repository ``context``
    on ``parent_tag``."""
    build_args = {spec.base_arg: parent_tag, **pip_args}
    key = input_key(context / spec.dockerfile, context / spec.context, build_args, [parent_tag])
    tag = f"{REPOSITORY}/{spec.name}:{version(context)}-{key}"
    return build_args, tag, images_dir() / f"{spec.name}-{key}.oci.tar"


def ensure_base(buildah: Buildah) -> Image:
    tag, archive = base_target()
    cached = _cached("python", tag, archive)
    if cached:
        return cached
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        base_image.make_rootfs(rootfs, base_image.apt_sources())
        buildah.import_rootfs(rootfs, tag, base_image.CONFIG)
    image = _export(buildah, "python", tag, archive, time.monotonic() - start)
    prune(buildah, "python", keep=archive)
    return image


def ensure_image(
    buildah: Buildah, spec: ImageSpec, parent: Image, pip_args: dict[str, str], mounts: list[str]
) -> Image:
    build_args, tag, archive = image_target(spec, parent.tag, pip_args)
    cached = _cached(spec.name, tag, archive)
    if cached:
        return cached
    _in_store(buildah, parent)
    start = time.monotonic()
    buildah.build(REPO_ROOT / spec.dockerfile, REPO_ROOT / spec.context, tag, build_args, mounts)
    image = _export(buildah, spec.name, tag, archive, time.monotonic() - start)
    prune(buildah, spec.name, keep=archive)
    return image


def prune(buildah: Buildah, name: str, keep: Path, generations: int = KEEP_GENERATIONS) -> None:
    """Drop all but the newest archives of an image, and their images in the store (other
    branches' keys stay a while)."""
    archives = sorted(images_dir().glob(f"{name}-*.oci.tar"), key=lambda p: p.stat().st_mtime)
    for old in [a for a in archives if a != keep][: max(0, len(archives) - generations)]:
        record = _record_path(old)
        if record.is_file():
            buildah.remove_image(json.loads(record.read_text())["tag"])
        old.unlink(missing_ok=True)
        record.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One image build at a time per cache (concurrent `make images` runs wait here)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("[images] another build holds the cache; waiting", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_images(names: list[str] | None = None, log: bool = True) -> dict[str, Image]:
    """Build what is missing or stale (and the images it starts from); name -> Image."""
    wanted = _with_bases(names)
    with build_lock():
        return _ensure(wanted, log)


def _ensure(wanted: set[str], log: bool) -> dict[str, Image]:
    try:
        buildah = Buildah(cache_root() / "buildah")
        pip_args, mounts = pip_build_args(pip_settings())
        built = {"python": ensure_base(buildah)}
        if log:
            report(built["python"], buildah.driver)
        for spec in IMAGES:
            if spec.name in wanted:
                built[spec.name] = ensure_image(buildah, spec, built[spec.base], pip_args, mounts)
                if log:
                    report(built[spec.name], buildah.driver)
    except BuildahError as exc:
        raise ImageBuildError(str(exc)) from exc
    return {name: image for name, image in built.items() if name in wanted}


def report(image: Image, driver: str) -> None:
    how = "cached" if image.cached else f"built in {image.build_seconds:.1f}s"
    if image.cached:
        how += f" (its build took {image.build_seconds:.1f}s)"
    print(
        f"[images] {image.name}: {how}; {image.unpacked_bytes / 1e6:.0f} MB unpacked, "
        f"archive {image.archive_bytes / 1e6:.0f} MB; {image.tag} -> {image.archive} "
        f"(buildah storage driver {driver})",
        flush=True,
    )


def _with_bases(names: list[str] | None) -> set[str]:
    """``names`` (all when None) and the images they are built from."""
    unknown = set(names or ()) - set(NAMES)
    if unknown:
        raise ImageBuildError(f"unknown images {sorted(unknown)}; known: {list(NAMES)}")
    wanted = set(names or NAMES)
    for spec in reversed(IMAGES):  # an image needs its base
        if spec.name in wanted:
            wanted.add(spec.base)
    return wanted


def find_images(names: list[str] | None = None) -> dict[str, Image]:
    """The images `make images` built for the current inputs (``names`` and their bases; all
    when None), without building (for tests in the network namespace, where nothing can be
    built); raises saying what to run."""
    wanted = _with_bases(names)
    pip_args, _ = pip_build_args(pip_settings())
    found: dict[str, Image | None] = {"python": _cached("python", *base_target())}
    for spec in IMAGES:
        parent = found.get(spec.base)
        if spec.name in wanted and parent is not None:
            _args, tag, archive = image_target(spec, parent.tag, pip_args)
            found[spec.name] = _cached(spec.name, tag, archive)
        elif spec.name in wanted:
            found[spec.name] = None
    missing = [name for name, image in found.items() if image is None]
    if missing:
        raise ImageBuildError(
            f"images {missing} are not built for the current sources; run `make images` "
            "(outside the test network namespace: building needs the network)"
        )
    return {name: image for name, image in found.items() if image is not None and name in wanted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=NAMES, help="this image (and its bases)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        ensure_images(args.only)
    except (ImageBuildError, FileNotFoundError) as exc:
        print(f"[images] BUILD FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"[images] all ready in {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
