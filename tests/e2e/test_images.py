"""The Dockerfiles, as far as they can be checked without a container engine: the files each
build stage copies are enough to build the distribution, the wheel carries what the images
run (console scripts, the vendored VAD model), and the final stage runs as a numeric non-root
user with an entrypoint the wheel provides."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devenv.environment import REPO_ROOT

pytestmark = pytest.mark.e2e

DOCKERFILES = [REPO_ROOT / "operator" / "Dockerfile", REPO_ROOT / "jobrunner" / "Dockerfile"]


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def build_context(dockerfile: Path, into: Path) -> Path:
    """Copy what the build stage's COPY lines name from the repository, as `docker build .` would."""
    for line in stages(dockerfile)[0]:
        if line.upper().startswith("COPY ") and "--from" not in line:
            *sources, _dest = line.split()[1:]
            for src in sources:
                path = REPO_ROOT / src.rstrip("/")
                target = into / src.rstrip("/")
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    ctx = build_context(DOCKERFILES[0], tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        # no build isolation: the test network namespace has no package index; the build
        # backend (setuptools, wheel) is in the dev install
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("livekit_agent_operator-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_both_images_copy_the_same_sources(dockerfile: Path) -> None:
    copies = [line for line in stages(dockerfile)[0] if line.upper().startswith("COPY ")]
    reference = [line for line in stages(DOCKERFILES[0])[0] if line.upper().startswith("COPY ")]
    assert copies == reference


def test_the_wheel_carries_what_the_images_run(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "agent_operator/cli.py" in names
    assert "agent_jobrunner/cli.py" in names
    assert "agent_jobrunner/voice/models/silero_vad.onnx" in names, "the VAD model must ship"
    assert not [n for n in names if n.startswith("tests/")], "tests stay out of images"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = wheel.read(entry_points).decode()
    for dockerfile in DOCKERFILES:
        final = stages(dockerfile)[-1]
        entrypoint = next(line for line in final if line.upper().startswith("ENTRYPOINT"))
        command = re.findall(r'"([^"]+)"', entrypoint)[0]
        assert re.search(rf"^{re.escape(command)} = ", scripts, re.M), (dockerfile, command, scripts)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_final_stage_runs_as_numeric_non_root(dockerfile: Path) -> None:
    final = stages(dockerfile)[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) != 0
