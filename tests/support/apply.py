"""Server-side apply of rendered manifests, as ``kubectl apply --server-side --force-conflicts``.

Each document is PATCHed to its own URL with ``application/apply-patch+yaml``, a field
manager, ``force=true`` and strict field validation (an unknown field is an error, not a
warning). The URL comes from API discovery, so custom resources work as soon as their CRD
is served.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from devenv.kubeclient import eventually

FIELD_MANAGER = "agent-operator-tests"

_JSON = {200: "object", 201: "object"}


class Applier:
    def __init__(self, api: client.ApiClient, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.field_manager = field_manager
        self._resources: dict[str, list[dict[str, Any]]] = {}

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("header_params", {})["Accept"] = "application/json"
        return await self.api.call_api(
            path,
            method,
            response_types_map=_JSON,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            **kw,
        )

    async def _resource(self, api_version: str, kind: str, timeout: float = 30) -> dict[str, Any]:
        """The discovery entry of ``kind``; waits for it to be served (a fresh CRD takes a moment)."""

        def match(resources: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((r for r in resources if r["kind"] == kind and "/" not in r["name"]), None)

        async def discover() -> dict[str, Any] | None:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            self._resources[api_version] = list((await self._call("GET", base))["resources"])
            return match(self._resources[api_version])

        found = match(self._resources.get(api_version, []))
        return found if found is not None else await eventually(discover, timeout, f"{kind} at {api_version}")

    async def cluster_scoped(self, doc: dict[str, Any]) -> bool:
        return not (await self._resource(doc["apiVersion"], doc["kind"]))["namespaced"]

    async def url(self, doc: dict[str, Any], namespace: str) -> str:
        api_version = doc["apiVersion"]
        resource = await self._resource(api_version, doc["kind"])
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        name = doc["metadata"]["name"]
        if resource["namespaced"]:
            ns = doc["metadata"].get("namespace") or namespace
            return f"{base}/namespaces/{ns}/{resource['name']}/{name}"
        return f"{base}/{resource['name']}/{name}"

    async def apply(self, doc: dict[str, Any], namespace: str) -> dict[str, Any]:
        """Server-side apply; returns the object the API server stored."""
        applied: dict[str, Any] = await self._call(
            "PATCH",
            await self.url(doc, namespace),
            query_params=[
                ("fieldManager", self.field_manager),
                ("force", "true"),
                ("fieldValidation", "Strict"),
            ],
            header_params={"Content-Type": "application/apply-patch+yaml"},
            body=doc,
        )
        return applied

    async def read(self, doc: dict[str, Any], namespace: str) -> dict[str, Any]:
        got: dict[str, Any] = await self._call("GET", await self.url(doc, namespace))
        return got

    async def delete(self, doc: dict[str, Any], namespace: str) -> None:
        """Delete; an object already gone is fine."""
        try:
            await self._call("DELETE", await self.url(doc, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise


def differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where ``got`` (read back from the API server) lacks what ``want`` (applied) set.

    Fields the server adds (defaults, status, metadata) are fine; a value it dropped or
    changed is a difference (a pruned unknown field, say)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k, v in want.items() for d in differences(v, got.get(k), f"{path}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [
            d
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for d in differences(w, g, f"{path}[{i}]")
        ]
    return [] if want == got else [f"{path or '.'}: applied {want!r}, read back {got!r}"]
