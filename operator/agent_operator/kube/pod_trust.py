"""What the operator keeps on a pod, signed, and whether a pod found later may be trusted.

A restarted operator learns its pods from their labels and annotations: which deployment
a pod serves, whether it idles in the warm pool, which job it runs, and the job's start
request (room, participant identity; ``agent_operator.resume``), from which it mints a room
token. Anyone allowed to patch pods can write those, so they are signed: an HMAC-SHA256 over
the pod's namespace and name, its controller's uid, and every label and annotation the
operator reads back, in the annotation ``agentoperator.dev/signature``.

The key is derived from the deployment's LiveKit API secret. Whoever holds that secret can
mint any room token directly, so a forger gains nothing from it that they lacked; no other
secret has to be created, stored or rotated, and a pod signed for one deployment does not
verify for a deployment with another secret. Rotating the secret leaves older pods
unverifiable: their running calls go on (a re-attaching runner brings its own job), but an
idle pod is replaced instead of adopted, and an unstarted job is not resumed.

A pod is trusted when its controller ownerReference is the AgentDeployment (by uid), its job
label agrees with its job annotation, and its signature verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from agent_operator.kube.podspec import (
    ANNOTATION_DISPATCH_ID,
    ANNOTATION_JOB_ID,
    ANNOTATION_ROOM,
    ANNOTATION_START,
    LABEL_DEPLOYMENT,
    LABEL_JOB_ID,
    LABEL_STATE,
    LABEL_TEMPLATE,
    JobInfo,
    job_annotations,
)
from agent_operator.spec import GROUP

ANNOTATION_SIGNATURE = f"{GROUP}/signature"
SIGNED_LABELS = (LABEL_DEPLOYMENT, LABEL_STATE, LABEL_JOB_ID, LABEL_TEMPLATE)
SIGNED_ANNOTATIONS = (ANNOTATION_ROOM, ANNOTATION_JOB_ID, ANNOTATION_DISPATCH_ID, ANNOTATION_START)
_VERSION = "v1"
_KEY_CONTEXT = b"agentoperator.dev/pod-record/v1"


def signing_key(api_secret: str) -> bytes:
    """The pod-record key of a deployment, derived from its LiveKit API secret."""
    return hmac.new(api_secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def signature(
    key: bytes,
    namespace: str,
    name: str,
    owner_uid: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> str:
    """The signature of a pod record: only the signed keys count, absent keys as absent."""
    record = {
        "namespace": namespace,
        "name": name,
        "owner": owner_uid,
        "labels": {k: labels[k] for k in SIGNED_LABELS if k in labels},
        "annotations": {k: annotations[k] for k in SIGNED_ANNOTATIONS if k in annotations},
    }
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_VERSION}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def sign_pod(key: bytes, body: dict[str, Any]) -> None:
    """Sign a pod body before it is created (the body of ``podspec.build_runner_pod``)."""
    meta = body["metadata"]
    annotations = meta.setdefault("annotations", {})
    annotations[ANNOTATION_SIGNATURE] = signature(
        key, meta["namespace"], meta["name"], controller_uid(meta), meta.get("labels") or {}, annotations
    )


def busy_signature(
    key: bytes,
    namespace: str,
    name: str,
    owner_uid: str,
    deployment: str,
    template_hash: str,
    job: JobInfo,
) -> str:
    """The signature of a warm-pool pod once it has taken ``job`` (``PodManager.mark_busy``)."""
    labels = {
        LABEL_DEPLOYMENT: deployment,
        LABEL_TEMPLATE: template_hash,
        LABEL_STATE: "busy",
        LABEL_JOB_ID: job.job_id,
    }
    return signature(key, namespace, name, owner_uid, labels, job_annotations(job))


def controller_uid(meta: Mapping[str, Any]) -> str:
    """The uid of the pod's controller ownerReference ("" when it has none)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def untrusted(pod: Mapping[str, Any], owner_uid: str, key: bytes | None) -> str:
    """Why ``pod`` may not be taken as a pod of the deployment ``owner_uid`` ("" when it may).

    Without a key (the LiveKit Secret unreadable) only the ownerReference and the labels are
    checked; the signature must then be checked before anything is minted for the pod."""
    meta: Mapping[str, Any] = pod.get("metadata") or {}
    controller = controller_uid(meta)
    if controller != owner_uid:
        return (
            f"its controller ownerReference ({controller or 'none'}) is not the AgentDeployment ({owner_uid})"
        )
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    if labels.get(LABEL_JOB_ID, "") != annotations.get(ANNOTATION_JOB_ID, ""):
        return "its job label and job annotation disagree"
    if key is None:
        return ""
    given = annotations.get(ANNOTATION_SIGNATURE, "")
    if not given:
        return "it carries no signature"
    expected = signature(
        key, str(meta.get("namespace", "")), str(meta.get("name", "")), controller, labels, annotations
    )
    if not hmac.compare_digest(given, expected):
        return "its signature does not match its labels and annotations"
    return ""
