"""What a job pod's status says went wrong for good, read from what the kubelet and the
scheduler write: a container OOM-killed, an image that cannot be pulled, a pod that no node can
take, a container the kubelet stopped because its liveness (or startup) probe failed. Each is a
reason and a message that says what to fix.

A probe kill leaves no mark in the pod's status (the container just terminates, often with exit
code 0: the runner shuts down on the kubelet's SIGTERM), only the kubelet's Events on the pod,
so ``probe_failure`` reads those, for a pod ``probe_killable`` says may have been killed so.
What the kubelet writes (v1.36, read on the real node): ``Unhealthy`` "Liveness probe failed:
<the probe's output>", then, with restartPolicy Never and the pod's only container failing,
``Killing`` "Stopping container agent" (it kills the whole pod, and the probe is not named);
a container it restarts gets ``Killing`` "Container agent failed liveness probe, will be
restarted". A pod not being deleted that the kubelet stopped after its liveness probe failed
was stopped for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

# waiting reasons of a container that will not start without a change to the template
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
MESSAGE_LIMIT = 400
# the probes whose failure makes the kubelet stop a container, and the reason a job ends with
PROBE_KILLS = {"liveness": "LivenessProbeFailed", "startup": "StartupProbeFailed"}


@dataclasses.dataclass(frozen=True)
class PodFailure:
    reason: str  # OOMKilled, ErrImagePull, ImagePullBackOff, InvalidImageName, ..., Unschedulable
    message: str  # for a person: what happened, then what to fix


def pod_failure(pod: Mapping[str, Any]) -> PodFailure | None:
    """The failure that ends the pod's job now, or None while nothing says the job cannot go on."""
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in statuses:
        state = container.get("state") or {}
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return PodFailure(
                "OOMKilled",
                f"container {container.get('name')} was OOMKilled (exit code {terminated.get('exitCode')}): "
                "it used more memory than its limit; raise resources.limits.memory in the template "
                "(or make the agent use less)",
            )
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in IMAGE_REASONS:
            said = _short(waiting.get("message") or "")
            return PodFailure(
                waiting["reason"],
                f"image {container.get('image')!r} of container {container.get('name')} cannot be pulled "
                f"({waiting['reason']}{': ' + said if said else ''}); check the template's image name and "
                "tag, that the node's registry has it, and imagePullSecrets",
            )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            said = _short(condition.get("message") or "")
            return PodFailure(
                "Unschedulable",
                f"no node can run the pod (Unschedulable{': ' + said if said else ''}); lower the "
                "template's resources.requests or add a node they fit on",
            )
    return None


def probe_killable(pod: Mapping[str, Any]) -> bool:
    """Whether a container of the pod (not being deleted) has a liveness or startup probe and
    has terminated: it may have been stopped by the kubelet for a failed probe."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    containers = (pod.get("spec") or {}).get("containers") or []
    if not any(c.get("livenessProbe") or c.get("startupProbe") for c in containers):
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any((s.get("state") or {}).get("terminated") for s in statuses)


def probe_failure(events: Sequence[Mapping[str, Any]]) -> PodFailure | None:
    """The probe kill the pod's Events tell (the kubelet's ``Killing``, after an ``Unhealthy``
    for a failed liveness or startup probe, or naming the probe), with the probe's last output,
    or None."""
    kills = [e for e in events if e.get("reason") == "Killing"]
    if not kills:
        return None
    for probe, reason in PROBE_KILLS.items():
        named = [e for e in kills if f"failed {probe} probe" in (e.get("message") or "")]
        said = next(
            (
                _short(e.get("message") or "")
                for e in reversed(events)
                if e.get("reason") == "Unhealthy" and (e.get("message") or "").lower().startswith(probe)
            ),
            "",
        )
        if not named and not said:
            continue
        kill = (named or kills)[-1]
        container = _container(kill)
        return PodFailure(
            reason,
            f"the kubelet stopped container {container} because its {probe} probe failed"
            f"{' (' + said + ')' if said else ''}; with restartPolicy Never the job ends: fix the "
            f"template's {probe}Probe, or what it checks in the agent",
        )
    return None


def _container(kill: Mapping[str, Any]) -> str:
    """The container a ``Killing`` Event is about: its field path (``spec.containers{agent}``),
    else its message's ("Container agent failed ..." or "Stopping container agent")."""
    path = str((kill.get("involvedObject") or {}).get("fieldPath") or "")
    if path.startswith("spec.containers{") and path.endswith("}"):
        return path.removeprefix("spec.containers{").removesuffix("}")
    message = _short(kill.get("message") or "")
    if message.startswith("Stopping container "):
        return message.removeprefix("Stopping container ")
    return message.split(" failed ")[0].removeprefix("Container ")


def _short(text: str) -> str:
    return " ".join(text.split())[:MESSAGE_LIMIT]
