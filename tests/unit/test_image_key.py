"""The image cache's decision: an image is rebuilt exactly when what its build reads changes
(devenv/image_key.py), and pip in a build gets only the host settings it needs."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

import pytest

from devenv.image_key import copied_sources, copy_context, ignored, input_key
from devenv.images import BUILD_CA_PATH, IMAGES, REPO_ROOT, ImageBuildError, pip_build_args

pytestmark = pytest.mark.unit

RUNNER = next(spec for spec in IMAGES if spec.name == "runner")
ARGS = {"PYTHON_IMAGE": "docker.io/livekit-agent-operator/python:3.11-abc"}


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A temporary copy of what the runner Dockerfile's build context holds, plus an unrelated
    file and the repository's .dockerignore."""
    ctx = copy_context(REPO_ROOT / RUNNER.dockerfile, REPO_ROOT, tmp_path / "ctx")
    (ctx / "notes.txt").write_text("not copied by the Dockerfile\n")
    return ctx


def key(ctx: Path, args: dict[str, str] = ARGS, parents: tuple[str, ...] = ("base-1",)) -> str:
    return input_key(ctx / "jobrunner" / "Dockerfile", ctx, args, parents)


def test_the_runner_dockerfile_copies_what_the_key_hashes() -> None:
    assert copied_sources((REPO_ROOT / RUNNER.dockerfile).read_text()) == [
        "pyproject.toml",
        "README.md",
        "operator/",
        "jobrunner/",
    ]  # and not the `COPY --from=build` of the final stage


def test_same_inputs_give_the_same_key(context: Path, tmp_path: Path) -> None:
    first = key(context)
    assert key(context) == first
    again = tmp_path / "again"
    shutil.copytree(context, again)
    assert key(again) == first, "the key depends on contents, not on where the context is"


def test_a_changed_copied_file_gives_a_new_key(context: Path) -> None:
    before = key(context)
    module = context / "jobrunner" / "agent_jobrunner" / "cli.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert key(context) != before


def test_a_new_or_removed_copied_file_gives_a_new_key(context: Path) -> None:
    before = key(context)
    new = context / "operator" / "agent_operator" / "extra.py"
    new.write_text("X = 1\n")
    with_new = key(context)
    assert with_new != before
    new.unlink()
    assert key(context) == before


def test_a_mode_change_of_a_copied_file_gives_a_new_key(context: Path) -> None:
    before = key(context)
    (context / "README.md").chmod(0o755)
    assert key(context) != before


def test_files_the_build_does_not_read_leave_the_key(context: Path) -> None:
    before = key(context)
    (context / "notes.txt").write_text("changed\n")
    cache = context / "jobrunner" / "agent_jobrunner" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "cli.cpython-311.pyc").write_bytes(b"\0" * 16)
    (context / "operator" / "livekit_agent_operator.egg-info").mkdir()
    (context / "operator" / "livekit_agent_operator.egg-info" / "PKG-INFO").write_text("x\n")
    assert key(context) == before


def test_the_dockerfile_build_args_and_base_are_in_the_key(context: Path) -> None:
    before = key(context)
    assert key(context, {**ARGS, "PIP_INDEX_URL": "https://pypi.example.com/simple"}) != before
    assert key(context, {"PYTHON_IMAGE": "python:3.11-slim"}) != before
    assert key(context, parents=("base-2",)) != before
    dockerfile = context / "jobrunner" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "LABEL x=y\n")
    assert key(context) != before


def test_a_copy_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        input_key(tmp_path / "Dockerfile", tmp_path, {})


def test_dockerignore_patterns() -> None:
    patterns = ["**/__pycache__", "**/*.egg-info", ".venv", "build"]
    assert ignored(PurePosixPath("operator/agent_operator/__pycache__/x.pyc"), patterns)
    assert ignored(PurePosixPath("operator/x.egg-info/PKG-INFO"), patterns)
    assert ignored(PurePosixPath(".venv/bin/python"), patterns)
    assert not ignored(PurePosixPath("operator/build/x.py"), patterns)
    assert not ignored(PurePosixPath("operator/agent_operator/cli.py"), patterns)


def test_pip_gets_the_index_and_ca_bundle_but_no_host_paths(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    args, mounts = pip_build_args(
        {
            "index-url": "https://pypi.example.com/simple",
            "trusted-host": "pypi.example.com",
            "cert": str(bundle),
            "find-links": "/opt/wheels",
            "default-timeout": "180",
        }
    )
    assert args == {
        "PIP_INDEX_URL": "https://pypi.example.com/simple",
        "PIP_TRUSTED_HOST": "pypi.example.com",
        "PIP_CERT": BUILD_CA_PATH,
    }
    assert mounts == [f"{bundle}:{BUILD_CA_PATH}:ro"]
    assert pip_build_args({}) == ({}, [])
    with pytest.raises(ImageBuildError, match="does not exist"):
        pip_build_args({"cert": str(tmp_path / "absent.pem")})
