"""manifests/ is derived, never edited by hand."""

from __future__ import annotations

import pytest

from tests.testenv.environment import REPO_ROOT

pytestmark = pytest.mark.unit


def test_manifest_crd_is_the_charts_crd() -> None:
    source = (
        REPO_ROOT / "charts" / "livekit-agent-operator" / "crds" / "agentdeployments.agentoperator.dev.yaml"
    )
    copy = REPO_ROOT / "manifests" / "crd-agentdeployments.yaml"
    assert copy.read_text() == source.read_text(), "manifests/ is out of date: copy the chart's CRD"
