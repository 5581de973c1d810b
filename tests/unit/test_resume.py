"""The start request a job pod keeps (agent_operator.resume): no token on the pod, and the
token rebuilt for a resumed job carries what LiveKit puts in an agent's own token."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from livekit import api
from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb
from agent_operator import resume

pytestmark = pytest.mark.unit

KEY, SECRET = "APIkey123", "a-secret-of-enough-length-for-hs256-0123456789"


def request(metadata: str = "") -> pb.StartJobRequest:
    job = agent.Job(id="AJ_1", room=models.Room(name="room-1", sid="RM_1"), metadata=metadata)
    return pb.StartJobRequest(
        job=job.SerializeToString(),
        url="ws://livekit:7880",
        token="eyJ.the-room-token.sig",
        participant_identity="agent-AJ_1",
        participant_name="Agent",
        participant_metadata='{"m": 1}',
        participant_attributes={"lk.agent.name": "voice", "team": "a"},
        auto_subscribe=pb.AUTO_SUBSCRIBE_AUDIO_ONLY,
    )


def test_what_the_pod_keeps_has_everything_but_the_token() -> None:
    original = request()
    text = resume.encode(original)
    assert "eyJ" not in text
    assert "the-room-token" not in base64.b64decode(text).decode("latin-1")
    kept = resume.decode(text)
    assert kept is not None
    assert kept.token == ""
    expected = pb.StartJobRequest()
    expected.CopyFrom(original)
    expected.ClearField("token")
    assert kept == expected
    assert original.token, "the request being sent keeps its token"


def test_a_job_too_big_for_an_annotation_is_not_kept() -> None:
    assert resume.encode(request(metadata="x" * (resume.MAX_ANNOTATION_BYTES))) == ""
    assert resume.encode(request(metadata="x" * 1000))


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"\xff\x00garbage").decode()])
def test_an_unusable_annotation_resumes_nothing(text: str) -> None:
    assert resume.decode(text) is None


def test_an_annotation_with_a_token_is_not_ours() -> None:
    with_token = base64.b64encode(request().SerializeToString()).decode()
    assert resume.decode(with_token) is None


def test_the_rebuilt_token_is_an_agent_token_for_the_job() -> None:
    kept = resume.decode(resume.encode(request()))
    assert kept is not None
    permission = models.ParticipantPermission(
        can_subscribe=True, can_publish=True, can_publish_data=False, hidden=True, can_update_metadata=True
    )
    token = resume.agent_token(kept, KEY, SECRET, permission)
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "agent-AJ_1"
    assert claims.name == "Agent"
    assert claims.metadata == '{"m": 1}'
    assert claims.attributes == {"lk.agent.name": "voice", "team": "a"}
    video = claims.video
    assert video is not None
    assert (video.room, video.room_join, video.agent) == ("room-1", True, True)
    assert (video.can_subscribe, video.can_publish, video.can_publish_data) == (True, True, False)
    assert (video.hidden, video.can_update_own_metadata) == (True, True)
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert raw["iss"] == KEY
    assert raw["kind"] == "agent"  # from the token itself: livekit-api < 1.2.2 does not read it back
    assert abs(raw["exp"] - time.time() - 3600) < 60, "valid for an hour, as LiveKit's own"
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, "another-secret-of-enough-length-0123456789").verify(token)

    sent = resume.with_token(kept, token)
    assert sent.token == token
    assert kept.token == "", "the kept request is left as it was"
