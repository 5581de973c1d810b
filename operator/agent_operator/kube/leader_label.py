"""The leader's pod carries ``agentoperator.dev/leader=true``; every other replica ``false``.

The chart's runner Service selects that label, so runner pods only ever reach the operator
that leads: a standby replica is Ready (a rollout needs it to be) but refuses runners. The
label follows what this process wants it to be (``want``): ``false`` at start (a container
restarted in place keeps its pod's labels), ``true`` once it holds the Lease, ``false``
again when it hands over. One task writes it, retrying while the API server is away; a
later wish replaces an earlier one that was not written yet.
"""

from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio import client

from agent_operator.kube import timeouts
from agent_operator.kube.pods import brief, transient

log = logging.getLogger("agent_operator.leader_label")

LEADER_LABEL = "agentoperator.dev/leader"
RETRY_SECONDS = 1.0


class LeaderPodLabel:
    def __init__(self, api: client.ApiClient, namespace: str, pod: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace, self.pod = namespace, pod
        self.fields = {"pod": f"{namespace}/{pod}"}
        self._want: bool | None = None
        self._written: bool | None = None
        self._changed = asyncio.Event()
        self._done = asyncio.Event()  # set whenever what is written is what is wanted
        self._done.set()

    @property
    def written(self) -> bool | None:
        """What the pod's label says as far as this process wrote it (None: not written)."""
        return self._written

    def want(self, leader: bool) -> None:
        if leader == self._want:
            return
        self._want = leader
        if self._written != leader:
            self._done.clear()
        self._changed.set()  # the writer looks again, even if a write is under way

    async def settled(self, timeout: float) -> bool:
        """Wait until the wish is written (or ``timeout``); True if it is."""
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Write each wish until cancelled."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            want = self._want
            if want is None or want == self._written:
                self._done.set()
                continue
            try:
                await self._core.patch_namespaced_pod(
                    self.pod,
                    self.namespace,
                    {"metadata": {"labels": {LEADER_LABEL: "true" if want else "false"}}},
                    _content_type="application/merge-patch+json",
                    _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
                )
            except Exception as exc:
                if transient(exc):
                    log.warning(
                        "could not label this operator's pod %s=%s: %s",
                        LEADER_LABEL,
                        want,
                        brief(exc),
                        extra=self.fields,
                    )
                    await asyncio.sleep(RETRY_SECONDS)
                    self._changed.set()
                    continue
                # RBAC or a pod that does not exist: retrying will not help; runners then
                # reach this replica only if the Service does not select the label
                log.error(
                    "cannot label this operator's pod %s=%s: %s",
                    LEADER_LABEL,
                    want,
                    brief(exc),
                    extra=self.fields,
                )
                self._written = None
                self._done.set()
                continue
            self._written = want
            log.info(
                "labelled this operator's pod %s=%s",
                LEADER_LABEL,
                "true" if want else "false",
                extra=self.fields,
            )
            if self._want == want:
                self._done.set()
