"""Kubernetes Events on an AgentDeployment (what ``kubectl describe`` shows a person)."""

from __future__ import annotations

import datetime
import logging

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator import metrics
from agent_operator.kube import timeouts
from agent_operator.kube.podspec import Owner
from agent_operator.spec import GROUP, KIND, VERSION

log = logging.getLogger("agent_operator.kube.events")
COMPONENT = "livekit-agent-operator"


class EventRecorder:
    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    async def record(self, owner: Owner, reason: str, message: str, warning: bool = False) -> None:
        """Post an Event; failing to post one is logged, never raised (events are best effort)."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{owner.name}.", "namespace": owner.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": owner.name,
                "namespace": owner.namespace,
                "uid": owner.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            with metrics.kube_call("create_event"):
                await self._core.create_namespaced_event(
                    owner.namespace, body, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as exc:
            log.warning(
                "could not post event %s: %s %s",
                reason,
                exc.status,
                exc.reason,
                extra={"deployment": f"{owner.namespace}/{owner.name}"},
            )
        except (OSError, TimeoutError) as exc:  # the API server away: events are best effort
            log.warning(
                "could not post event %s: %s",
                reason,
                type(exc).__name__,
                extra={"deployment": f"{owner.namespace}/{owner.name}"},
            )
