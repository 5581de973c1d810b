"""Smoke tests proving the Kubernetes half of the test environment is real."""

from __future__ import annotations

import uuid

import pytest
from kubernetes_asyncio import client

from devenv import binaries
from devenv.environment import TestEnvironment
from devenv.kubeclient import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.smoke]


async def test_apiserver_answers_version(k8s: client.ApiClient, test_env: TestEnvironment) -> None:
    info = await client.VersionApi(k8s).get_code()
    assert info.major == "1"
    if test_env.local_kube:
        assert info.git_version == binaries.K8S_VERSION


async def test_crd_created_and_custom_object_listed(k8s: client.ApiClient, namespace: str) -> None:
    group = f"smoke{uuid.uuid4().hex[:6]}.agentoperator.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    ext = client.ApiextensionsV1Api(k8s)
    await ext.create_custom_resource_definition(crd)
    try:

        async def established() -> bool:
            got = await ext.read_custom_resource_definition(f"widgets.{group}")
            return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

        await eventually(established, 30, "CRD Established")
        custom = client.CustomObjectsApi(k8s)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }

        async def create() -> bool:  # discovery may lag Established by a moment
            await custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)
            return True

        await eventually(create, 30, "custom object created")
        listed = await custom.list_namespaced_custom_object(group, "v1", namespace, "widgets")
        assert [(o["metadata"]["name"], o["spec"]["size"]) for o in listed["items"]] == [("w1", 3)]
    finally:
        await ext.delete_custom_resource_definition(f"widgets.{group}")
