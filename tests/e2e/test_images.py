"""The Dockerfiles and the images built from them (`make images`, devenv/images.py).

Without an engine: the files each build stage copies are enough to build the distribution, the
wheel carries what the images run (console scripts, the vendored VAD model), and the final
stage runs as a numeric non-root user with an entrypoint the wheel provides, and the public
`python:3.11-slim` stays the default base.

The built images, from the OCI archives the local cluster imports, each unpacked and run with
runc the way a restricted pod runs it (uid 65532, read-only root, no capabilities): the runner's
and the operator's entrypoints run, the test agent image imports the test agents and the voice
example and speaks with espeak-ng. Nothing is built here (this suite runs in a network
namespace with no route out): the images come from `make images`, and the cache answers for
all of them without building."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devenv.environment import REPO_ROOT
from devenv.image_key import copy_context
from devenv.images import (
    IMAGES,
    Image,
    ImageBuildError,
    ensure_images,
    find_images,
    image_target,
    pip_build_args,
    pip_settings,
)
from devenv.oci_archive import layer_paths
from tests.support.oci_run import UnpackedImage

pytestmark = pytest.mark.e2e

DOCKERFILES = [REPO_ROOT / "operator" / "Dockerfile", REPO_ROOT / "jobrunner" / "Dockerfile"]


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped (the global ARGs
    before the first FROM belong to no stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    ctx = copy_context(DOCKERFILES[0], REPO_ROOT, tmp_path_factory.mktemp("context"))
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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_public_python_image_stays_the_default_base(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms
    assert all(line.startswith("FROM ${PYTHON_IMAGE}") for line in froms), froms


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    try:
        return find_images()
    except ImageBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def unpacked(images: dict[str, Image], tmp_path_factory: pytest.TempPathFactory) -> dict[str, UnpackedImage]:
    return {
        name: UnpackedImage(images[name].archive, tmp_path_factory.mktemp(name))
        for name in ("python", "runner", "operator", "test-agents", "weather-agent")
    }


def test_the_cache_answers_for_every_image_without_building(images: dict[str, Image]) -> None:
    # in this network namespace a build could not reach any index: a cache miss would fail
    again = ensure_images(log=False)
    assert set(again) == {"python", "runner", "operator", "test-agents", "weather-agent", "voice-agent"}
    assert all(image.cached for image in again.values()), again
    assert {n: i.tag for n, i in again.items()} == {n: i.tag for n, i in images.items()}
    for image in again.values():
        assert re.fullmatch(r"docker\.io/livekit-agent-operator/[a-z-]+:[0-9.]+-[0-9a-f]{12}", image.tag)
        assert image.archive.stat().st_size == image.archive_bytes


def test_a_changed_copied_file_in_a_copy_of_the_repository_asks_for_a_rebuild(
    images: dict[str, Image], tmp_path: Path
) -> None:
    runner = next(spec for spec in IMAGES if spec.name == "runner")
    context = copy_context(REPO_ROOT / runner.dockerfile, REPO_ROOT, tmp_path / "repo")
    pip_args, _ = pip_build_args(pip_settings())
    _args, same_tag, same_archive = image_target(runner, images["python"].tag, pip_args, context)
    assert (same_tag, same_archive) == (images["runner"].tag, images["runner"].archive)
    cli = context / "jobrunner" / "agent_jobrunner" / "cli.py"
    cli.write_text(cli.read_text() + "\n# changed\n")
    _args, new_tag, new_archive = image_target(runner, images["python"].tag, pip_args, context)
    assert new_tag != images["runner"].tag
    assert not new_archive.exists(), "a changed source names an archive that is not built yet"


def test_the_base_image_is_laid_out_like_python_slim(unpacked: dict[str, UnpackedImage]) -> None:
    base = unpacked["python"]
    assert base.config["Cmd"] == ["python3"]
    assert "LANG=C.UTF-8" in base.config["Env"]
    script = (
        "python --version && pip --version && test -s /etc/ssl/certs/ca-certificates.crt"
        " && test ! -e /usr/lib/python3.11/EXTERNALLY-MANAGED"
        " && python -m venv /tmp/venv && /tmp/venv/bin/pip --version && command -v apt-get"
    )
    ran = base.run(["sh", "-ec", script])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith("Python 3.11."), ran.stdout
    assert "/tmp/venv/lib/python3.11/site-packages/pip" in ran.stdout


def test_the_runner_image_runs_its_entrypoint_as_65532_on_a_read_only_root(
    unpacked: dict[str, UnpackedImage],
) -> None:
    runner = unpacked["runner"]
    assert runner.config["User"] == "65532:65532"
    assert runner.entrypoint == ["agent-jobrunner"]
    ran = runner.run([*runner.entrypoint, "--help"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "usage: agent-jobrunner" in ran.stdout
    probe = runner.run(["python", "-c", "import os; print(os.getuid(), os.getgid()); open('/app/x', 'w')"])
    assert probe.stdout.split() == ["65532", "65532"]
    assert "Read-only file system" in probe.stderr
    # the base distribution only: no control plane in a job image
    no_operator = runner.run(["python", "-c", "import kopf"])
    assert no_operator.returncode != 0
    assert "No module named 'kopf'" in no_operator.stderr


def test_the_operator_image_runs_its_entrypoint(unpacked: dict[str, UnpackedImage]) -> None:
    operator = unpacked["operator"]
    assert operator.config["User"] == "65532:65532"
    assert operator.config["Cmd"] == ["run"]
    ran = operator.run([*operator.entrypoint, "--help"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "usage: agent-operator" in ran.stdout


def test_the_agent_image_holds_the_test_agents_and_speaks(unpacked: dict[str, UnpackedImage]) -> None:
    agents = unpacked["test-agents"]
    assert agents.config["User"] == "65532:65532", "built FROM the runner, its user is kept"
    assert agents.entrypoint == ["agent-jobrunner"]
    # broken_import raises at import on purpose (a failed prewarm)
    modules = sorted(
        p.stem
        for p in (REPO_ROOT / "tests" / "agents").glob("*.py")
        if p.stem not in ("__init__", "broken_import")
    )
    code = (
        "import importlib, shutil\n"
        f"for name in {modules!r}: importlib.import_module('tests.agents.' + name)\n"
        "from agent_jobrunner.examples.voice import entrypoint\n"
        "import numpy, onnxruntime, pocketsphinx\n"
        "print(shutil.which('espeak-ng'))\n"
    )
    ran = agents.run(["python", "-c", code])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip() == "/usr/bin/espeak-ng"
    spoke = agents.run(["sh", "-c", "espeak-ng --stdout 'hello there' | head -c 4"])
    assert spoke.returncode == 0, spoke.stderr
    assert spoke.stdout == "RIFF", "espeak-ng writes a WAV stream"


def test_the_livekit_agents_example_image_holds_the_agent_as_it_is(
    unpacked: dict[str, UnpackedImage],
) -> None:
    example = unpacked["weather-agent"]
    assert example.config["User"] == "65532:65532", "built FROM the runner, its user is kept"
    assert example.entrypoint == ["agent-jobrunner"]
    code = (
        "import shutil\n"
        "from livekit.agents import AgentServer\n"
        "import agent\n"  # /app, the working directory
        "assert isinstance(agent.server, AgentServer), agent.server\n"
        "from agent_jobrunner.lka.agent import resolve\n"
        "print(resolve('agent:server').style, shutil.which('espeak-ng'))\n"
    )
    ran = example.run(["python", "-c", code])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split()[-2:] == ["AgentServer", "/usr/bin/espeak-ng"]


# the voice example's offline providers, in the image: espeak-ng speaks a question, Silero VAD
# hears speech in it, PocketSphinx (with the example's phrases) transcribes it
VOICE_ROUND_TRIP = """
import asyncio
from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm, Resampler
from agent_jobrunner.voice.providers.espeak import EspeakTTS
from agent_jobrunner.voice.providers.pocketsphinx import PocketSphinxSTT
from agent_jobrunner.voice.providers.rules import RuleBasedLLM
from agent_jobrunner.voice.providers.silero import SileroVAD

async def main():
    tts = EspeakTTS(words_per_minute=140)
    pcm = Pcm.concat([c async for c in tts.synthesize("what is the weather in paris")], tts.sample_rate)
    resampler = Resampler(tts.sample_rate, MODEL_SAMPLE_RATE)
    silence = Pcm.silence(0.3, MODEL_SAMPLE_RATE)
    audio = Pcm.concat([silence, resampler.push(pcm), resampler.flush(), silence], MODEL_SAMPLE_RATE)
    vad = await SileroVAD.load()
    stream = vad.stream()
    events = []
    for start in range(0, len(audio), 160):
        events += await stream.push(Pcm(audio.samples[start : start + 160], MODEL_SAMPLE_RATE))
    await stream.aclose()
    stt = await PocketSphinxSTT.load(RuleBasedLLM().phrases())
    try:
        print("speech events:", len(events))
        print("heard:", (await stt.recognize(audio)).text)
    finally:
        await stt.aclose()

asyncio.run(main())
"""


def test_the_voice_example_hears_and_speaks_in_the_agent_image(unpacked: dict[str, UnpackedImage]) -> None:
    ran = unpacked["test-agents"].run(["python", "-c", VOICE_ROUND_TRIP])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "heard: what is the weather in paris" in ran.stdout, ran.stdout + ran.stderr
    events = int(ran.stdout.split("speech events:")[1].split()[0])
    assert events >= 1, ran.stdout


def test_the_build_leaves_no_trace_of_the_host_in_the_agent_image(images: dict[str, Image]) -> None:
    # the agent image's own layer holds its RUN steps, during which the host's CA bundle was
    # mounted for pip: neither it nor a mount point may remain
    top = layer_paths(images["test-agents"].archive, -1)
    assert "usr/bin/espeak-ng" in top
    leftovers = [p for p in top if p.startswith(("run/", "etc/ssl/", "etc/pip")) and p != "run/"]
    assert not leftovers, leftovers
