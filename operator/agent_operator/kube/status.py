"""The AgentDeployment's status subresource: conditions and counts, written only on change."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator import metrics
from agent_operator.kube import timeouts
from agent_operator.kube.podspec import Owner
from agent_operator.spec import GROUP, PLURAL, VERSION

log = logging.getLogger("agent_operator.kube.status")


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    def as_dict(self, generation: int, since: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "Unknown" if self.status is None else ("True" if self.status else "False"),
            "reason": self.reason,
            "message": self.message[:1024],
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }


class StatusWriter:
    """Patches status only when it changed; keeps lastTransitionTime of unchanged conditions."""

    def __init__(self, api: client.ApiClient, owner: Owner) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.owner = owner
        self._last: dict[str, Any] | None = None
        self._since: dict[tuple[str, str], str] = {}

    async def write(self, generation: int, conditions: list[Condition], fields: dict[str, Any]) -> bool:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rendered = []
        for cond in conditions:
            key = (cond.type, "Unknown" if cond.status is None else str(cond.status))
            since = self._since.setdefault(key, now)
            for other in [k for k in self._since if k[0] == cond.type and k != key]:
                del self._since[other]
            rendered.append(cond.as_dict(generation, since))
        status = {"observedGeneration": generation, "conditions": rendered, **fields}
        if status == self._last:
            return False
        try:
            with metrics.kube_call("patch_status", expected=(404,)):
                await self._custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    self.owner.namespace,
                    PLURAL,
                    self.owner.name,
                    {"status": status},
                    _content_type="application/merge-patch+json",
                    _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
                )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        self._last = status
        return True
