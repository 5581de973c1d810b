"""What /readyz answers (agent_operator.app.Probes)."""

from __future__ import annotations

import types
from typing import Any

import pytest

from agent_operator.app import Probes

pytestmark = pytest.mark.unit


def label(written: bool | None) -> Any:
    return types.SimpleNamespace(written=written)


async def test_starting_standby_and_serving() -> None:
    probes = Probes()
    assert probes.ready() is None, "starting"
    probes.standby = True
    assert probes.ready() == "standby", "without a leader label: ready while standing by"
    probes.standby = False
    assert probes.ready() is None, "took the Lease, kopf not serving yet"
    probes.serving.set()
    assert probes.ready() == "ready"


@pytest.mark.parametrize(("written", "answer"), [(None, None), (True, None), (False, "standby")])
async def test_a_standby_is_ready_once_its_pod_is_not_labelled_the_leader(
    written: bool | None, answer: str | None
) -> None:
    """A container restarted in place keeps its pod's leader=true: until this process has
    written false, a Ready pod would be sent runners it refuses."""
    probes = Probes()
    probes.standby = True
    probes.label = label(written)
    assert probes.ready() == answer
