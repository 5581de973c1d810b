"""A job's latest checkpoint, kept on the job's own pod, sealed (failover across an operator
restart, issue 15).

Where it is kept. While a job runs, its deployment writes the latest checkpoint its runner
sent (``pb.Checkpoint``: the job id, its seq, the agent's state) to the annotation
``agentoperator.dev/checkpoint`` of the job's pod (``agent_operator.checkpoint_keeper``: at
most about once a second per job, the latest wins, off the job's path). A pod made for a
restarted job carries the checkpoint it was restarted with from its creation (or, a pool pod,
from the patch that gives it the job). A pod that dies keeps its annotations until it is
deleted, and the operator deletes a dead job pod only when it restarts the job, right before
it makes the next pod (which carries the checkpoint from its creation), so the checkpoint
outlives the operator: a restarted operator that finds the dead pod reads it back and
restarts the job with it (``agent_operator.adoption``). Nothing else is created, no
volume, no ConfigMap, no Secret: the pod is already the record of its job, and its checkpoint
goes when the pod goes, with the job.

Why that is safe. A checkpoint is the agent's conversation, the caller's words, and
whoever may read pods (``kubectl get pod -o yaml``) reads every annotation; whoever may patch
pods writes them. So the annotation is ``v1.`` and the base64 of a random 96-bit nonce and
the AES-256-GCM encryption of the serialized ``pb.Checkpoint``, under a key derived with
HKDF-SHA256 from the deployment's LiveKit API secret (``checkpoint_key``; another derivation
than the pod signatures' key, ``pod_trust.signing_key``) and then per job, with the
deployment (namespace, name, uid) and the job id as associated data. Without the secret the
annotation cannot be read; a changed byte, an annotation written by someone else, or one
copied from another job's or another deployment's pod fails authentication and is ignored
(the job restarts without its conversation, as a job that never checkpointed). The secret
is one the operator already holds, and whoever holds it can mint any room token and join the
call anyway, so it gives a reader nothing new; there is no other key to create, store or
rotate. A per-job key keeps random nonces far from their bound. Rotating the secret makes
older checkpoints unreadable: a restarted job then starts without its conversation. The
state is at most ``MAX_CHECKPOINT_BYTES`` (32 KiB), so the annotation is under 44 KiB: with
the start request (at most 64 KiB) well within the 256 KiB Kubernetes allows a pod's
annotations.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from google.protobuf.message import DecodeError

from agent_jobrunner.protocol import MAX_CHECKPOINT_BYTES, pb
from agent_operator.kube.podspec import ANNOTATION_CHECKPOINT, Owner

__all__ = ["ANNOTATION_CHECKPOINT", "checkpoint_key", "open_sealed", "seal"]

_VERSION = "v1"
_KEY_CONTEXT = b"agentoperator.dev/checkpoint/v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16


def checkpoint_key(api_secret: str) -> bytes:
    """The deployment's checkpoint key, derived from its LiveKit API secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_CONTEXT).derive(
        api_secret.encode()
    )


def _bound(owner: Owner, job_id: str) -> bytes:
    """What a sealed checkpoint is bound to: the deployment and the job."""
    record = {"namespace": owner.namespace, "deployment": owner.name, "owner": owner.uid, "job": job_id}
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _job_cipher(key: bytes, bound: bytes) -> AESGCM:
    job_key = HKDFExpand(algorithm=hashes.SHA256(), length=32, info=_KEY_CONTEXT + b"/" + bound).derive(key)
    return AESGCM(job_key)


def seal(key: bytes, owner: Owner, checkpoint: pb.Checkpoint) -> str:
    """The annotation's value for the checkpoint of a job of ``owner``."""
    bound = _bound(owner, checkpoint.job_id)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _job_cipher(key, bound).encrypt(nonce, checkpoint.SerializeToString(), bound)
    return f"{_VERSION}.{base64.b64encode(nonce + sealed).decode('ascii')}"


def open_sealed(key: bytes, owner: Owner, job_id: str, text: str) -> pb.Checkpoint | None:
    """The checkpoint the annotation holds for the job ``job_id`` of ``owner``, or None when it
    holds none that is genuine (absent, malformed, tampered with, or another job's)."""
    version, _, body = text.partition(".")
    if version != _VERSION or not body:
        return None
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _NONCE_BYTES + _TAG_BYTES:
        return None
    bound = _bound(owner, job_id)
    try:
        plain = _job_cipher(key, bound).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound)
        checkpoint = pb.Checkpoint.FromString(plain)
    except (InvalidTag, DecodeError):
        return None
    if checkpoint.job_id != job_id or len(checkpoint.state) > MAX_CHECKPOINT_BYTES:
        return None
    return checkpoint
