"""The lowest-versions constraints (make test-lowest): every floor pinned, the higher of two."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

from devenv.lowest_constraints import constraints, floors

pytestmark = pytest.mark.unit


def test_each_floor_is_pinned_and_a_repeated_name_gets_the_higher_floor() -> None:
    found, unfloored = floors(
        [
            "livekit-protocol>=1.1.28,<2",
            "aiohttp>=3.9",
            "aiohttp>=3.11.0",
            "grpcio-tools==1.85.1",
            "Kubernetes_Asyncio>=30.1.0",
            "wheel",
            "livekit-agent-operator[voice]",
        ],
        "livekit-agent-operator",
    )
    assert found == {
        "livekit-protocol": Version("1.1.28"),
        "aiohttp": Version("3.11.0"),
        "grpcio-tools": Version("1.85.1"),
        "kubernetes-asyncio": Version("30.1.0"),
    }
    assert unfloored == ["wheel"], "the project's own extras are not a dependency"


def test_the_constraints_of_a_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "demo"\ndependencies = ["livekit>=1.1.17,<2"]\n'
        '[project.optional-dependencies]\nx = ["prometheus-client>=0.24.0", "demo[y]"]\n'
        'y = ["livekit>=1.1.20"]\n'
    )
    text, unfloored = constraints(pyproject)
    assert text == "livekit==1.1.20\nprometheus-client==0.24.0\n"
    assert unfloored == []
