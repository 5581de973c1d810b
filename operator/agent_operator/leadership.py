"""Leadership over a deploy: the next operator stands by, the leaving one hands over.

A rollout starts the new operator pod while the old one still serves (RollingUpdate,
maxSurge 1). The new one waits for the Lease (``LeaderLease.acquire``). On SIGTERM the old
one hands over: it holds LiveKit's job offers (``Handover``), releases the Lease, and waits
until the new one has taken it and marked itself serving (its LiveKit workers registered),
then declines the held offers so that LiveKit gives them to the new workers, and stops.
No dispatch meets a moment without a registered worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes_asyncio import client

from agent_operator.handover import Handover
from agent_operator.kube import timeouts
from agent_operator.kube.lease import LeaderLease
from agent_operator.kube.pods import transient
from agent_operator.spec import GROUP, PLURAL, VERSION

log = logging.getLogger("agent_operator.leadership")

LEASE_SECONDS = 15.0  # a standby takes over after this long without a renewal seen
POLL_SECONDS = 0.1  # while handing over: how often the leaving leader looks at the Lease


@dataclasses.dataclass(frozen=True)
class ElectionConfig:
    namespace: str  # of the Lease: the operator's own namespace
    name: str = "livekit-agent-operator"
    identity: str = ""  # this process; the pod name in a cluster
    lease_duration: float = LEASE_SECONDS
    handover_timeout: float = 10.0  # how long a leaving leader waits for the next one to serve
    claim_timeout: float = 3.0  # no candidate took the released Lease by then: there is none
    label_pod: str = ""  # this operator's pod (in ``namespace``), labelled while it leads
    # step down after this long without a renewal (0: never); set when standbys run
    renew_deadline: float = 0.0


async def hand_over(lease: LeaderLease, handover: Handover, election: ElectionConfig) -> str:
    """The leaving leader's side. Returns how it ended (for the log)."""
    handover.active = True
    started = time.monotonic()
    try:
        try:
            await lease.release()
        except Exception as exc:  # the API server is away: nobody can take over anyway
            return f"could not release the leader Lease ({exc})"
        while (waited := time.monotonic() - started) < election.handover_timeout:
            try:
                holder, serving = await lease.successor()
            except Exception as exc:
                if not transient(exc):
                    raise
                holder, serving = "?", False
            if serving:
                handover.successor_serving = True
                return f"{holder} serves after {waited:.2f}s"
            if not holder and waited > election.claim_timeout:
                return f"no operator took the leader Lease within {election.claim_timeout:.0f}s"
            await asyncio.sleep(POLL_SECONDS)
        return f"the next operator did not serve within {election.handover_timeout:.0f}s"
    finally:
        handover.successor_ready.set()


async def expected_deployments(api: client.ApiClient, namespaces: list[str]) -> set[tuple[str, str]]:
    """The AgentDeployments this operator is to serve (not being deleted)."""
    custom = client.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    if namespaces:
        for ns in namespaces:
            found = await custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )
            items += found.get("items", [])
    else:
        found = await custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
        )
        items += found.get("items", [])
    metas = [item.get("metadata") or {} for item in items]
    return {(m.get("namespace", ""), m.get("name", "")) for m in metas if not m.get("deletionTimestamp")}


async def announce_serving(
    lease: LeaderLease,
    expected: Iterable[tuple[str, str]],
    serving: Callable[[str, str], bool],
    timeout: float,
) -> None:
    """The new leader's side: mark the Lease serving once every deployment's worker is
    registered (or cannot be), or after ``timeout`` at the latest."""
    keys = set(expected)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(serving(ns, name) for ns, name in keys):  # noqa: ASYNC110 - state of many deployments
        await asyncio.sleep(0.05)
    waiting = sorted(f"{ns}/{name}" for ns, name in keys if not serving(ns, name))
    if waiting:
        log.warning(
            "marking the Lease serving although these deployments are not registered yet: %s",
            ", ".join(waiting),
            extra=lease.fields,
        )
    while True:
        try:
            await lease.mark_serving()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("could not mark the leader Lease serving: %s", exc, extra=lease.fields)
            await asyncio.sleep(1.0)
            continue
        log.info("serving: %d deployments registered", len(keys) - len(waiting), extra=lease.fields)
        return
