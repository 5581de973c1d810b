"""The CRD on the real API server: the example validates, defaults apply, bad specs read well."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devenv.environment import REPO_ROOT
from tests.support.operator import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.e2e


def example() -> dict[str, Any]:
    docs = list(
        yaml.safe_load_all((REPO_ROOT / "manifests" / "examples" / "agentdeployment.yaml").read_text())
    )
    return next(d for d in docs if d["kind"] == "AgentDeployment")


async def test_example_is_accepted_and_defaulted(k8s: client.ApiClient, ns: str) -> None:
    custom = client.CustomObjectsApi(k8s)
    created = await custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, example())
    spec = created["spec"]
    assert spec["workerType"] == "room"
    assert spec["permissions"]["canPublish"] is True
    assert spec["participant"]["identityTemplate"] == "agent-{job_id}"
    assert spec["heartbeat"]["startTimeout"] == "60s"
    assert spec["livekit"]["credentialsSecretRef"]["apiKeyKey"] == "api-key"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"heartbeat": {"pingInterval": "90s", "pingTimeout": "60s"}}, "pingInterval must be shorter"),
        ({"workerType": "job"}, "workerType"),
        ({"drainTimeout": "ten minutes"}, "drainTimeout"),
        ({"livekit": {"url": "ftp://x", "credentialsSecretRef": {"name": "a"}}}, "livekit.url"),
        ({"template": {"spec": {"containers": []}}}, "containers"),
    ],
)
async def test_bad_specs_are_refused_readably(
    k8s: client.ApiClient, ns: str, patch: dict[str, Any], message: str
) -> None:
    body = example()
    body["metadata"]["name"] = "bad"
    body["spec"].update(patch)
    with pytest.raises(ApiException) as refused:
        await client.CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    assert refused.value.status == 422
    assert message in str(refused.value.body)
