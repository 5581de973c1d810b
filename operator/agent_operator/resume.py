"""A job's start request, kept on its pod so that the next operator can send it.

The operator that accepts a job sends its runner a StartJobRequest: the job, the LiveKit URL,
the agent participant's identity, name, metadata and attributes, and a room token LiveKit
minted for them. If that operator stops (a deploy, a crash) before the runner attached, the
request used to die with it, and the runner attached idle to the next operator: a call
without an agent. So every job pod carries the request *without its token* in an
annotation, and the next operator, finding the pod's runner idle, rebuilds the token the
way LiveKit builds an agent's (the deployment's API key and secret, the room, the
identity, the worker's permissions, kind agent) and sends the request. The annotation is
``kube.podspec.ANNOTATION_START``.

The annotation holds no secret: the job (room, dispatch metadata) and the participant
fields, which the runner gets anyway.
"""

from __future__ import annotations

import base64
import binascii
import datetime

from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb

# Kubernetes allows 256 KiB of annotations per object; a job whose metadata is bigger than
# this is started but cannot be resumed by another operator
MAX_ANNOTATION_BYTES = 64 * 1024
TOKEN_TTL = datetime.timedelta(hours=1)  # as LiveKit's own agent tokens


def encode(request: pb.StartJobRequest) -> str:
    """The request without its token, for the pod annotation; "" if it is too big. A
    restarted job's restored conversation is not kept there either (it is the caller's words;
    a pod's annotations are readable by whoever may read pods)."""
    kept = pb.StartJobRequest()
    kept.CopyFrom(request)
    kept.ClearField("token")
    kept.ClearField("restored_state")
    text = base64.b64encode(kept.SerializeToString()).decode("ascii")
    return text if len(text) <= MAX_ANNOTATION_BYTES else ""


def decode(text: str) -> pb.StartJobRequest | None:
    """The request an annotation holds, or None when it holds none that can be used."""
    if not text:
        return None
    try:
        request = pb.StartJobRequest.FromString(base64.b64decode(text, validate=True))
        agent.Job.FromString(request.job)
    except (binascii.Error, ValueError, DecodeError):
        return None
    if request.token or not request.job:  # never ours: we never store a token
        return None
    return request


def agent_token(
    request: pb.StartJobRequest, api_key: str, api_secret: str, permission: models.ParticipantPermission
) -> str:
    """A room token for the request's agent participant, as LiveKit mints it on assignment."""
    job = agent.Job.FromString(request.job)
    grants = api.VideoGrants(
        room_join=True,
        agent=True,
        room=job.room.name,
        can_subscribe=permission.can_subscribe,
        can_publish=permission.can_publish,
        can_publish_data=permission.can_publish_data,
        hidden=permission.hidden,
        can_update_own_metadata=permission.can_update_metadata,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_grants(grants)
        .with_identity(request.participant_identity)
        .with_name(request.participant_name)
        .with_kind("agent")
        .with_metadata(request.participant_metadata)
        .with_attributes(dict(request.participant_attributes))
        .with_ttl(TOKEN_TTL)
        .to_jwt()
    )


def with_token(request: pb.StartJobRequest, token: str) -> pb.StartJobRequest:
    resumed = pb.StartJobRequest()
    resumed.CopyFrom(request)
    resumed.token = token
    return resumed


def restarted(
    request: pb.StartJobRequest,
    token: str,
    url: str,
    checkpoint: pb.Checkpoint | None,
    restarts: int,
) -> pb.StartJobRequest:
    """The start request of a job restarted on a new pod (failover): the same job and agent
    participant, a fresh room token, the spec's URL, and the last checkpoint of its agent."""
    again = with_token(request, token)
    again.url = url
    again.restarts = restarts
    again.ClearField("restored_state")
    again.restored_seq = 0
    if checkpoint is not None:
        again.restored_state = checkpoint.state
        again.restored_seq = checkpoint.seq
    return again
