"""What a job pod's status says went wrong for good, read from what the kubelet and the
scheduler write: a container OOM-killed, an image that cannot be pulled, a pod that no node can
take. Each is a reason (Kubernetes' own word) and a message that says what to fix."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# waiting reasons of a container that will not start without a change to the template
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
MESSAGE_LIMIT = 400


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


def _short(text: str) -> str:
    return " ".join(text.split())[:MESSAGE_LIMIT]
