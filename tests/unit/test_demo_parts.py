"""The pure parts of `make demo` and the chart install: image references, the example
AgentDeployment as the demo fills it in, and the conversation read back from the operator's log."""

from __future__ import annotations

import json

import pytest

from devenv.demo import ENTRYPOINT, example_deployment, job_conversation
from devenv.helm_release import split_ref
from devenv.images import _with_bases
from devenv.livekit import LiveKitAccess

pytestmark = pytest.mark.unit


def test_an_image_reference_splits_at_its_tag() -> None:
    assert split_ref("docker.io/livekit-agent-operator/operator:0.1.0-abc") == (
        "docker.io/livekit-agent-operator/operator",
        "0.1.0-abc",
    )
    with pytest.raises(ValueError, match="no tag"):
        split_ref("localhost:5000/operator")


def test_the_images_a_caller_asks_for_come_with_their_bases() -> None:
    assert _with_bases(["voice-agent"]) == {"voice-agent", "runner", "python"}
    assert _with_bases(["operator"]) == {"operator", "python"}


def test_the_example_deployment_gets_what_a_user_fills_in() -> None:
    body = example_deployment(LiveKitAccess("ws://10.254.0.1:7880", "k", "s"), "repo/voice-agent:1")
    spec = body["spec"]
    assert spec["livekit"] == {
        "url": "ws://10.254.0.1:7880",
        "credentialsSecretRef": {"name": "livekit-credentials"},
    }
    assert spec["entrypoint"] == ENTRYPOINT
    (container,) = spec["template"]["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == ("repo/voice-agent:1", "IfNotPresent")


def test_the_conversation_is_the_jobs_message_events_in_order() -> None:
    def line(job: str, event: str, role: str = "", content: str = "") -> str:
        return json.dumps(
            {"msg": "voice event", "job_id": job, "event": event, "role": role, "content": content}
        )

    log = "\n".join(
        [
            "not json",
            line("J1", "MessageAdded", "user", "what is the weather in paris"),
            line("J2", "MessageAdded", "user", "another job"),
            line("J1", "TurnCompleted"),
            line("J1", "MessageAdded", "assistant", "The weather in paris is sunny and warm."),
        ]
    )
    assert job_conversation(log, "J1") == [
        ("user", "what is the weather in paris"),
        ("assistant", "The weather in paris is sunny and warm."),
    ]
