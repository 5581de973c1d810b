"""The distribution's layout promises: stdlib `operator` never shadowed, CLIs run, runner is lean."""

from __future__ import annotations

import operator
import subprocess
import sys

import pytest

from devenv.environment import REPO_ROOT

pytestmark = pytest.mark.unit


def test_stdlib_operator_under_pytest() -> None:
    assert hasattr(operator, "itemgetter")
    assert operator.__file__ is not None
    assert "site-packages" not in operator.__file__
    assert not operator.__file__.startswith(str(REPO_ROOT))


def test_stdlib_operator_from_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; operator.itemgetter; print(operator.__file__)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not out.stdout.strip().startswith(str(REPO_ROOT))


@pytest.mark.parametrize("cli", ["agent-operator", "agent-jobrunner"])
def test_cli_help(cli: str) -> None:
    module = {"agent-operator": "agent_operator.cli", "agent-jobrunner": "agent_jobrunner.cli"}[cli]
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"usage: {cli}")


def test_runner_does_not_pull_in_control_plane() -> None:
    code = (
        "import sys, agent_jobrunner.cli\n"
        "heavy = ('kopf', 'kubernetes_asyncio', 'prometheus_client', 'agent_operator')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_native_runner_does_not_pull_in_livekit_agents() -> None:
    """The base runner image has no livekit-agents: only AGENT_RUNTIME=livekit-agents imports it."""
    code = (
        "import sys, agent_jobrunner.cli, agent_jobrunner.runner, agent_jobrunner.jobruntime\n"
        "lka = ('livekit.agents', 'livekit.plugins', 'agent_jobrunner.lka')\n"
        "bad = [m for m in sys.modules if m.startswith(lka)]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
