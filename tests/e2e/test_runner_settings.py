"""What a template may set in the runner's environment, end to end (issue 14, defect 12):
``AGENT_LOG_LEVEL=DEBUG`` reaches the runner (its debug lines are forwarded to the
operator's log), an envFrom ConfigMap cannot override the operator's wiring, and a
reserved name in the template is InvalidSpec naming it."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes_asyncio import client
from livekit import api

from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from tests.support.operator import (
    Deployments,
    OperatorProcess,
    agent_container,
    agent_deployment,
    create_credentials,
    dispatch,
    wait_participant,
)

pytestmark = pytest.mark.e2e

DEBUG_LINE = "a debug record from the entrypoint"  # tests.agents.simple:chatty logs it at DEBUG


def forwarded_debug(operator: OperatorProcess, room: str) -> bool:
    for line in operator.log_text().splitlines():
        if DEBUG_LINE in line and f'"room": "{room}"' in line:
            record = json.loads(line)
            return bool(record["level"] == "DEBUG" and record["logger"] == "agent_operator.runner")
    return False


async def test_a_templates_log_level_reaches_the_runner_and_env_from_cannot_rewire_it(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
    lk: api.LiveKitAPI,
) -> None:
    core = client.CoreV1Api(k8s)
    await create_credentials(core, deployments.namespace, livekit)
    # an envFrom source that tries to point the runner elsewhere and at a CA of its own
    await core.create_namespaced_config_map(
        deployments.namespace,
        {
            "metadata": {"name": "rewire"},
            "data": {
                "AGENT_OPERATOR_ADDRESS": "203.0.113.1:1",
                "AGENT_OPERATOR_TLS_CA_PEM": "not a certificate",
                "AGENT_POD_UID": "someone-else",
            },
        },
    )
    container = agent_container()
    assert {"name": "AGENT_LOG_LEVEL", "value": "DEBUG"} in container["env"]
    container["envFrom"] = [{"configMapRef": {"name": "rewire"}}]
    body = await deployments.create(
        agent_deployment("settings", livekit, "tests.agents.simple:chatty", container=container)
    )
    await operator.wait_ready()
    await deployments.wait_condition("settings", "Ready", "True")
    room = f"settings-{uuid.uuid4().hex[:6]}"
    await dispatch(lk, body["spec"]["agentName"], room)
    await wait_participant(lk, room, "agent-", timeout=120)  # the runner attached: wiring intact

    async def debug_forwarded() -> bool:
        return forwarded_debug(operator, room)

    await eventually(debug_forwarded, 60, "the runner's DEBUG line forwarded to the operator")


async def test_a_reserved_name_in_the_template_is_invalid_spec_naming_it(
    operator: OperatorProcess,
    deployments: Deployments,
    k8s: client.ApiClient,
    livekit: LiveKitAccess,
) -> None:
    await create_credentials(client.CoreV1Api(k8s), deployments.namespace, livekit)
    container = agent_container()
    container["env"] = [*container["env"], {"name": "AGENT_OPERATOR_ADDRESS", "value": "203.0.113.1:1"}]
    await deployments.create(
        agent_deployment("reserved", livekit, "tests.agents.simple:chatty", container=container)
    )
    await operator.wait_ready()

    async def invalid() -> dict[str, str] | None:
        cond = await deployments.condition("reserved", "Ready")
        return cond if cond and cond.get("reason") == "InvalidSpec" else None

    ready = await eventually(invalid, 60, "Ready=False with reason InvalidSpec")
    assert "AGENT_OPERATOR_ADDRESS" in ready["message"]
    assert "reserved for the operator" in ready["message"]
    assert await deployments.pods("reserved") == []
