"""manifests/ is derived, never edited by hand (the rendered chart: tests/e2e/test_chart.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from devenv.environment import REPO_ROOT

pytestmark = pytest.mark.unit


def test_manifest_crd_is_the_charts_crd() -> None:
    source = (
        REPO_ROOT / "charts" / "livekit-agent-operator" / "crds" / "agentdeployments.agentoperator.dev.yaml"
    )
    copy = REPO_ROOT / "manifests" / "crd-agentdeployments.yaml"
    assert copy.read_text() == source.read_text(), "manifests/ is out of date: run `make manifests`"


def _doc(path: str, kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO_ROOT / "manifests" / "examples" / path).read_text())
    return next(d for d in docs if d and d["kind"] == kind)


def test_example_secret_is_what_the_example_deployment_reads() -> None:
    secret = _doc("secret.yaml", "Secret")
    ref = _doc("agentdeployment.yaml", "AgentDeployment")["spec"]["livekit"]["credentialsSecretRef"]
    assert secret["metadata"]["name"] == ref["name"]
    crd = yaml.safe_load((REPO_ROOT / "manifests" / "crd-agentdeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = schema["properties"]["livekit"]["properties"]["credentialsSecretRef"]["properties"]
    # the example relies on the default key names
    keys = {
        ref.get("apiKeyKey", defaults["apiKeyKey"]["default"]),
        ref.get("apiSecretKey", defaults["apiSecretKey"]["default"]),
    }
    assert set(secret["stringData"]) == keys
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values()), "placeholders only"


def test_livekit_agents_example_deploys_the_example_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_jobrunner.lka.agent import resolve
    from agent_operator.spec import DeploymentSpec

    spec = DeploymentSpec.parse(_doc("livekit-agents.yaml", "AgentDeployment")["spec"])
    assert spec.runtime == "livekit-agents"
    # the entrypoint names the example's AgentServer, in the module its Dockerfile copies to /app
    monkeypatch.syspath_prepend(str(REPO_ROOT / "jobrunner" / "examples" / "weather-agent"))
    parts = resolve(spec.entrypoint)
    assert parts.style == "AgentServer"
    assert parts.setup is not None
    module = spec.entrypoint.partition(":")[0]
    assert (
        f"COPY {module}.py /app/" in (REPO_ROOT / "jobrunner/examples/weather-agent/Dockerfile").read_text()
    )
    server = __import__(module).server
    assert server._agent_name == spec.agent_name
