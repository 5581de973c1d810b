"""What a job pod found after an operator restart tells of the job's failover (pure): whether
its runner died (a restart is due, if failover allows) or ended the job itself, how many times
the job was restarted already, and in which order the pods of one job are taken up.

The restart count is the ``restarts`` of the start request the pod keeps (``resume``): the
annotation ``agentoperator.dev/start-request`` is signed (``kube.pod_trust``) on a pod made
for the job and on a pool pod that took it (``PodManager.mark_busy``, once the calls joined
their rooms: ``placement``), so a pod that is trusted carries a count nobody rewrote. The
checkpoint is kept beside it, sealed (``kube.pod_checkpoint``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from agent_operator import resume
from agent_operator.kube.pod_failures import pod_failure
from agent_operator.kube.pods import pod_outcome
from agent_operator.kube.podspec import ANNOTATION_START
from agent_operator.supervisor.types import DEATH_EXITED, DEATH_OOM, DEATH_POD_DELETED

# a runner ends with an exit code of its own (1: the job failed, 2: a bad configuration, 3: an
# internal error, 4: no operator to re-attach to): the job ended by the runner's doing. A
# container killed by a signal ends with 128 + the signal (SIGKILL 137, SIGSEGV 139)
SIGNALLED_EXIT = 128


def died_of(pod: Mapping[str, Any]) -> str:
    """The cause (a ``DEATH_`` of the supervisor) of a finished job pod's end when its runner
    died with the job (OOMKilled, killed by a signal, the pod evicted or its node lost), or ""
    when it ended well or the runner ended the job itself."""
    succeeded, _ = pod_outcome(pod)
    if succeeded:
        return ""
    failure = pod_failure(pod)
    if failure is not None and failure.reason == "OOMKilled":
        return DEATH_OOM
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    term = ((statuses[0].get("state") or {}).get("terminated") or {}) if statuses else {}
    if not term:
        return DEATH_POD_DELETED if status.get("phase") == "Failed" else ""
    code = term.get("exitCode")
    return DEATH_EXITED if isinstance(code, int) and code >= SIGNALLED_EXIT else ""


def restarts_kept(pod: Mapping[str, Any]) -> int:
    """How many times the pod's job was restarted before this pod (0 when it keeps no start
    request)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    kept = resume.decode(annotations.get(ANNOTATION_START, ""))
    return kept.restarts if kept is not None else 0


def restart_times(count: int, created: object, now: float, wall_now: float) -> list[float]:
    """The job's earlier restarts as times of ``now``'s clock, for the failover budget. Only
    their number is kept; each is taken as late as it can have been, when the pod was created
    (the last restart made it), so the budget is never overspent: a pod older than the window
    has all of them out of it."""
    at = now
    if isinstance(created, str) and created:
        try:
            when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            at = now - max(0.0, wall_now - when.timestamp())
        except ValueError:
            pass
    elif isinstance(created, datetime.datetime):
        at = now - max(0.0, wall_now - created.timestamp())
    return [at] * count


def listing_order(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods found at start, live ones first, then the finished ones of each job newest
    first (the most restarts, then the latest created): a job whose previous operator had
    made its next pod but not yet deleted the dead one is the live pod's, and the dead one is
    only deleted; of several dead pods, the newest (with the latest checkpoint) restarts it."""

    def key(pod: dict[str, Any]) -> tuple[bool, int]:
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        return finished, -restarts_kept(pod)

    newest_first = sorted(
        pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True
    )
    return sorted(newest_first, key=key)
