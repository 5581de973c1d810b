"""The livekit-agents example's own image (``jobrunner/examples/weather-agent/Dockerfile``, built
by ``make images`` FROM the runner image) as an AgentDeployment's pods on the real node: a warm
pod prewarmed from the image answers a caller's question with its tool.

Job pods are containers on the real node. The same
agent file from source, on either node, is ``tests/e2e/test_lka_operator.py``.
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.images import find_images
from devenv.livekit import LiveKitAccess
from tests.support import environments
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_deployment,
    create_credentials,
    job_pod,
    status_equals,
)
from tests.support.weather_call import ANSWER_WORDS, ask_the_weather

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
]


async def test_the_example_image_answers_from_a_warm_pod(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    image = find_images()["weather-agent"]
    environments.session_node().import_image(image.archive)
    # the AgentDeployment a user writes for it (manifests/examples/livekit-agents.yaml): the
    # image, the runtime and the AgentServer's name; nothing else of the test agents' setup
    container = {"image": image.tag, "imagePullPolicy": "IfNotPresent", "env": []}
    body = agent_deployment(
        "weather-image",
        livekit,
        "agent:server",
        container=container,
        runtime="livekit-agents",
        warmPool={"size": 1},
    )
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    await deployments.create(body)
    await operator.wait_ready()
    await deployments.wait_condition("weather-image", "Ready", "True", timeout=90)
    await status_equals(deployments, "weather-image", "idlePods", 1, timeout=240)
    idle = await job_pod(deployments, "weather-image")
    assert idle.spec.containers[0].image == image.tag

    busy, answer = await ask_the_weather(lk, livekit, deployments, "weather-image", body["spec"]["agentName"])
    assert busy == [idle.metadata.name]  # the warm pod took the job
    assert set(answer.split()) >= ANSWER_WORDS, answer
    status = await status_equals(deployments, "weather-image", "jobsSucceeded", 1, timeout=90)
    assert status["jobsFailed"] == 0
    assert "get_weather called" in operator.log_text()  # the agent's tool ran in the image's pod
