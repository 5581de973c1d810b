"""Leader election on a ``coordination.k8s.io/v1`` Lease: one operator serves, the next waits.

The holder renews the Lease; a candidate takes it when it is free (a leader that exits
gracefully releases it) or when nobody has renewed it for ``duration`` seconds. Expiry is
judged the way client-go judges it, by when this process last saw the record change (its
own clock, never the holder's), and a read that fails counts as a renewal seen: a candidate
cut off from the API server does not take over the moment the server comes back.

The Lease also carries the handover signal: a new holder marks itself *serving* (an
annotation) once its LiveKit workers are registered, and the leader that is leaving keeps
holding LiveKit's job offers until it sees that mark.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator.kube import timeouts
from agent_operator.kube.pods import brief, transient

log = logging.getLogger("agent_operator.lease")

SERVING_ANNOTATION = "agentoperator.dev/serving"


class LeaseLost(Exception):
    """Another process holds the Lease this one was renewing."""


def _now_micro() -> str:
    """A MicroTime as the API server parses it (always six fractional digits)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_every: float = 5.0,
        retry_every: float = 2.0,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew_every, self.retry_every = duration, renew_every, retry_every
        self.fields = {"lease": f"{namespace}/{name}", "identity": identity}
        self._seen_version = ""
        self._seen_at = 0.0  # monotonic: when the record last changed (or could not be read)
        self.held = False

    # -- reading ------------------------------------------------------------------------------
    async def _read(self) -> dict[str, Any] | None:
        """The Lease as a dict, or None if there is none."""
        try:
            lease = await self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = self._api.api_client.sanitize_for_serialization(lease)
        version = body["metadata"].get("resourceVersion", "")
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, time.monotonic()
        return body

    def _free(self, body: dict[str, Any]) -> bool:
        spec = body.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if not holder or holder == self.identity:
            return True
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        return time.monotonic() - self._seen_at > duration

    # -- candidate ----------------------------------------------------------------------------
    async def try_acquire(self) -> bool:
        """Take the Lease if it is free or expired; True if this process now holds it."""
        try:
            body = await self._read()
        except Exception as exc:
            if not transient(exc):
                raise
            self._seen_at = time.monotonic()  # could not look: assume the holder renewed
            log.warning("could not read the leader Lease: %s", exc, extra=self.fields)
            return False
        now = _now_micro()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": now,
            "renewTime": now,
        }
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        try:
            if body is None:
                spec["leaseTransitions"] = 0
                await self._api.create_namespaced_lease(
                    self.namespace,
                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec},
                    _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
                )
            else:
                if not self._free(body):
                    return False
                old = body.get("spec") or {}
                previous = old.get("holderIdentity") or ""
                transitions = int(old.get("leaseTransitions") or 0)
                spec["leaseTransitions"] = transitions + (1 if previous != self.identity else 0)
                annotations = dict(body["metadata"].get("annotations") or {})
                annotations.pop(SERVING_ANNOTATION, None)  # serving is marked once we are
                meta.update(resourceVersion=body["metadata"]["resourceVersion"], annotations=annotations)
                await self._api.replace_namespaced_lease(
                    self.name,
                    self.namespace,
                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec},
                    _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
                )
        except Exception as exc:
            if isinstance(exc, ApiException) and exc.status == 409:  # another candidate was quicker
                return False
            if not transient(exc):
                raise
            log.warning("could not take the leader Lease: %s", exc, extra=self.fields)
            return False
        self.held = True
        log.info("took the leader Lease", extra=self.fields)
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        logged = False
        while not await self.try_acquire():
            if not logged:
                log.info("another operator holds the leader Lease; standing by", extra=self.fields)
                logged = True
            await self._wait_for_change(self.retry_every)

    async def _wait_for_change(self, timeout: float) -> None:
        """Return when the Lease changes (a watch: a release is seen at once) or ``timeout``."""
        w = watch.Watch()
        try:
            async with asyncio.timeout(timeout):
                async for _event in w.stream(
                    self._api.list_namespaced_lease,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    resource_version=self._seen_version or None,
                    timeout_seconds=max(1, int(timeout) + 1),
                    _request_timeout=timeout + 5,
                ):
                    return
        except TimeoutError:
            return
        except Exception as exc:  # the watch is a shortcut; the timeout is the fallback
            log.debug("lease watch ended: %s", exc, extra=self.fields)
            await asyncio.sleep(timeout)
        finally:
            await w.close()  # the watch owns an ApiClient (and its HTTP session) of its own

    # -- holder -------------------------------------------------------------------------------
    async def keep(self, renew_deadline: float = 0.0) -> None:
        """Renew until cancelled. Raises LeaseLost once another process holds the Lease, or
        when no renewal succeeded for ``renew_deadline`` seconds (0: never).

        A renewal that fails is retried, whatever the reason. Without a deadline the leader
        keeps serving meanwhile (its calls need no API call) and only steps down when it sees
        a new holder: right for a single replica, where nobody else could serve. With
        standby replicas, a leader cut off from the API server must stop before a standby
        takes over (after ``duration`` without a renewal seen), or two would serve: the
        deadline is shorter than the duration, as client-go's renewDeadline.
        """
        failing = ""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                await self.renew()
            except LeaseLost:
                self.held = False
                raise
            except Exception as exc:
                why = brief(exc)
                if transient(exc):
                    log.warning("could not renew the leader Lease: %s", why, extra=self.fields)
                elif why != failing:  # the same refusal every 5 s is logged once
                    log.error("the API server refused to renew the leader Lease: %s", why, extra=self.fields)
                failing = why
                if renew_deadline and time.monotonic() - renewed > renew_deadline:
                    self.held = False
                    raise LeaseLost(
                        f"no renewal of the leader Lease for {renew_deadline:.0f}s ({why});"
                        " a standby may take over"
                    ) from exc
                continue
            renewed = time.monotonic()
            if failing:
                log.info("renewing the leader Lease again", extra=self.fields)
                failing = ""

    async def renew(self) -> None:
        body = await self._read()
        holder = ((body or {}).get("spec") or {}).get("holderIdentity") or ""
        if body is None or holder != self.identity:
            raise LeaseLost(f"the leader Lease is held by {holder or 'nobody'}")
        try:
            await self._patch({"spec": {"renewTime": _now_micro()}}, body["metadata"]["resourceVersion"])
        except ApiException as exc:
            if exc.status != 409:  # changed since read (our own mark_serving): next round looks again
                raise

    async def mark_serving(self) -> None:
        """Tell a leaving leader that this one's workers are registered."""
        await self._patch({"metadata": {"annotations": {SERVING_ANNOTATION: self.identity}}})

    async def release(self) -> None:
        """Give the Lease up, so that a waiting candidate takes it at once."""
        body = await self._read()
        if body is None or (body.get("spec") or {}).get("holderIdentity") != self.identity:
            self.held = False
            return
        await self._patch(
            {"spec": {"holderIdentity": None, "leaseDurationSeconds": 1}},
            body["metadata"]["resourceVersion"],
        )
        self.held = False
        log.info("released the leader Lease", extra=self.fields)

    async def successor(self) -> tuple[str, bool]:
        """Who holds the Lease now, and whether it marked itself serving."""
        body = await self._read() or {}
        holder = (body.get("spec") or {}).get("holderIdentity") or ""
        serving = ((body.get("metadata") or {}).get("annotations") or {}).get(SERVING_ANNOTATION, "")
        return holder, bool(holder) and holder != self.identity and serving == holder

    async def _patch(self, patch: dict[str, Any], resource_version: str = "") -> None:
        if resource_version:  # a precondition: fails with 409 if the record changed meanwhile
            patch = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version}}
        await self._api.patch_namespaced_lease(
            self.name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
            _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
        )
