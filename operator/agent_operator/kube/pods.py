"""Runner pods: creating them (riding out a brief API server outage), listing, labelling and
deleting them, and how the operator stops an unresponsive runner."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator import metrics
from agent_operator.kube import timeouts
from agent_operator.kube.pod_trust import ANNOTATION_SIGNATURE
from agent_operator.kube.podspec import LABEL_JOB_ID, LABEL_STATE, JobInfo, job_annotations
from agent_operator.vocabulary import PodIdentity

log = logging.getLogger("agent_operator.kube.pods")
RETRY_FIRST_DELAY, RETRY_MAX_DELAY = 0.25, 2.0
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


def brief(exc: BaseException) -> str:
    """One line about a failed call, the same for the same failure (an ApiException's text
    carries its response headers, with a request id and a date)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def exit_detail(pod: Mapping[str, Any]) -> str:
    """How the pod's (first) container ended, for a person: exit code, reason, message."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    term = ((statuses[0].get("state") or {}).get("terminated") or {}) if statuses else {}
    if not term:
        return f"pod phase {(pod.get('status') or {}).get('phase')}"
    parts = [f"exit code {term.get('exitCode')}", term.get("reason", ""), term.get("message", "")]
    return ", ".join(p for p in parts if p)[:500]


def pod_outcome(pod: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the pod's runner ended well, by what the kubelet wrote (phase Succeeded, or a
    runner container that terminated with exit code 0), and the detail."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    term = ((statuses[0].get("state") or {}).get("terminated") or {}) if statuses else {}
    succeeded = status.get("phase") == "Succeeded" or (bool(term) and term.get("exitCode") == 0)
    return succeeded, exit_detail(pod)


def transient(exc: BaseException) -> bool:
    """A failure worth retrying: the API server unreachable, restarting or overloaded."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES
    return isinstance(exc, OSError | TimeoutError | aiohttp.ClientConnectionError)


class PodTerminator:
    """Deletes a runner's pod (grace 0 by default: an unresponsive runner gets no grace).

    The uid precondition makes sure a newer pod of the same name is never hit.
    """

    def __init__(self, api: client.ApiClient, grace_seconds: int = 0) -> None:
        self._core = client.CoreV1Api(api)
        self.grace_seconds = grace_seconds

    async def terminate(self, pod: PodIdentity, reason: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": self.grace_seconds,
            "preconditions": {"uid": pod.uid},
        }
        try:
            with metrics.kube_call("delete_pod", expected=(404, 409)):
                await self._core.delete_namespaced_pod(
                    pod.name, pod.namespace, body=body, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as exc:
            if exc.status in (404, 409):  # already gone, or a different pod by now
                return
            raise
        log.info("deleted pod: %s", reason, extra={"pod": str(pod)})


class PodManager:
    """Creates, lists and removes runner pods."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    async def events(self, pod: PodIdentity) -> list[dict[str, Any]]:
        """The Events about the pod (the kubelet's among them), oldest first."""
        with metrics.kube_call("list_events"):
            listed = await self._core.list_namespaced_event(
                pod.namespace,
                field_selector=f"involvedObject.uid={pod.uid}",
                _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
            )
        items: list[dict[str, Any]] = self._core.api_client.sanitize_for_serialization(listed.items)
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def create(
        self, pod: dict[str, object], retry_for: float = 0.0, log_fields: Mapping[str, str] | None = None
    ) -> PodIdentity:
        """Create the pod; transient failures (the API server unreachable, restarting,
        overloaded) are retried with backoff for up to ``retry_for`` seconds. ``log_fields``
        (the job's and deployment's) go on the retry log lines."""
        meta = pod["metadata"]
        assert isinstance(meta, dict)
        namespace, name = meta["namespace"], meta["name"]
        deadline = time.monotonic() + retry_for
        delay, attempt = RETRY_FIRST_DELAY, 0
        while True:
            attempt += 1
            try:
                with metrics.kube_call("create_pod"):
                    created = await self._core.create_namespaced_pod(
                        namespace, pod, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                    )
                return PodIdentity(created.metadata.namespace, created.metadata.name, created.metadata.uid)
            except ApiException as exc:
                if exc.status == 409 and attempt > 1:
                    # an earlier attempt reached the server and only its answer was lost: the
                    # name carries a random suffix, so a pod of that name is the one we made
                    existing = await self._core.read_namespaced_pod(
                        name, namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                    )
                    return PodIdentity(namespace, name, existing.metadata.uid)
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise
                error: BaseException = exc
            except Exception as exc:
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise
                error = exc
            log.warning(
                "creating pod failed (%s), retrying in %.2fs",
                type(error).__name__,
                delay,
                extra={**(log_fields or {}), "pod": f"{namespace}/{name}"},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    async def delete(self, pod: PodIdentity, grace_seconds: int | None = None) -> None:
        body: dict[str, object] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": pod.uid},
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            with metrics.kube_call("delete_pod", expected=(404, 409)):
                await self._core.delete_namespaced_pod(
                    pod.name, pod.namespace, body=body, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def mark_busy(self, pod: PodIdentity, job: JobInfo, signature: str = "") -> None:
        """Label a pool pod with the job it took (the record that survives a restart), signed
        with ``signature`` (``pod_trust.busy_signature``)."""
        # no signature: drop the pool pod's own (None deletes a key in a merge patch)
        annotations: dict[str, str | None] = {**job_annotations(job), ANNOTATION_SIGNATURE: signature or None}
        patch = {
            "metadata": {
                "labels": {LABEL_STATE: "busy", LABEL_JOB_ID: job.job_id},
                "annotations": annotations,
            }
        }
        with metrics.kube_call("patch_pod"):
            await self._core.patch_namespaced_pod(
                pod.name, pod.namespace, patch, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )

    async def annotate(self, pod: PodIdentity, annotations: Mapping[str, str]) -> None:
        """Set annotations of the pod (a merge patch; its uid in the patch: never another pod
        of the same name)."""
        patch = {"metadata": {"uid": pod.uid, "annotations": dict(annotations)}}
        with metrics.kube_call("patch_pod"):
            await self._core.patch_namespaced_pod(
                pod.name, pod.namespace, patch, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )

    async def read(self, pod: PodIdentity) -> dict[str, object] | None:
        """The pod as it is now, or None when it is gone (or another pod has its name)."""
        try:
            with metrics.kube_call("read_pod", expected=(404,)):
                found = await self._core.read_namespaced_pod(
                    pod.name, pod.namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if found.metadata.uid != pod.uid:
            return None
        body: dict[str, object] = self._core.api_client.sanitize_for_serialization(found)
        return body

    async def list(self, namespace: str, selector: str) -> list[dict[str, object]]:
        with metrics.kube_call("list_pods"):
            pods = await self._core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )
        return [self._core.api_client.sanitize_for_serialization(p) for p in pods.items]
