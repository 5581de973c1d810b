"""Warm pool pods that fail before they serve (a prewarm that raises or hangs, an image that
cannot be pulled, no node for the pod): not idle, an Event, replaced with a growing wait that a
success resets; with fakes of the deployment's collaborators and a clock of the test's."""

from __future__ import annotations

from typing import Any, cast

import pytest

from agent_operator.conditions import warm_pool
from agent_operator.pool_backoff import PoolBackoff, for_people
from agent_operator.runtime import OperatorConfig, OperatorRuntime
from agent_operator.supervisor import RunnerBinding
from agent_operator.vocabulary import DeploymentRef, HeartbeatSettings, PodIdentity
from tests.support.deployment_fakes import Harness, harness, settle, spec

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_up_to_its_cap_and_a_success_resets_it() -> None:
    backoff = PoolBackoff(base=2.0, cap=30.0)
    delays = [backoff.failed(0.0, "PrewarmFailed", "boom").delay for _ in range(6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.last is not None
    assert backoff.last.in_a_row == 6
    backoff.failed(100.0, "PrewarmFailed", "boom")
    assert not backoff.allows(129.0)
    assert backoff.allows(130.0)
    backoff.succeeded()
    after: object = backoff.last  # (mypy keeps the narrowing above across the call)
    assert after is None
    assert backoff.allows(100.0)
    assert backoff.failed(100.0, "ErrImagePull", "no such image").delay == 2.0


def test_what_people_see_has_no_token_or_secret_and_is_short() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXZhbHVl"
    said = for_people(f"RuntimeError: cannot reach https://x?token={token} with\n api_secret=hunter2 now")
    assert token not in said
    assert "hunter2" not in said
    assert "\n" not in said
    assert said.startswith("RuntimeError: cannot reach")
    assert "api_secret=[redacted]" in said
    assert len(for_people("x" * 5000)) == 1000


def pool_harness(size: int = 1) -> tuple[Harness, Clock]:
    h = harness(spec(maxConcurrentJobs=4, warmPool={"size": size}))
    clock = Clock()
    h.dep.pool._clock = clock
    return h, clock


def only_pod(h: Harness) -> PodIdentity:
    [uid] = [uid for uid, pod in h.dep.pool.pods.items() if not pod.deleting]
    return h.pods.live[uid]


async def test_a_pool_pod_whose_prewarm_failed_is_not_idle_and_is_replaced_after_growing_waits() -> None:
    h, clock = pool_harness()
    await h.dep.pool.reconcile()
    first = only_pod(h)
    error = "the prewarm (setup_fnc) raised RuntimeError: no model"
    await h.dep.pool.failed(first.uid, "PrewarmFailed", error)
    await settle()
    assert h.dep.pool.ready == 0
    assert h.dep.pool.take(h.dep.spec.template_hash() if h.dep.spec else "") is None  # never given a job
    assert [pod.uid for pod, _ in h.pods.deleted] == [first.uid]
    [(reason, message)] = h.events.recorded
    assert reason == "PoolPodFailed"
    assert "PrewarmFailed" in message
    assert "RuntimeError: no model" in message
    assert "replaced in 2s" in message
    condition = next(c for c in h.dep.conditions() if c.type == "WarmPoolDegraded")
    assert (condition.status, condition.reason) == (True, "PrewarmFailed")
    assert "RuntimeError: no model" in condition.message

    # the same pod's failure said again (a second status update): counted once
    await h.dep.pool.failed(first.uid, "PrewarmFailed", "again")
    assert len(h.events.recorded) == 1

    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 1, "no replacement before the wait is over (no hot loop)"
    clock.now += 2.0
    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 2
    second = only_pod(h)
    await h.dep.pool.failed(second.uid, "PrewarmFailed", "the prewarm did not finish within 10s")
    clock.now += 2.0
    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 2, "the second wait is longer (4s)"
    clock.now += 2.0
    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 3

    # one that attaches prewarmed ends the degraded state and resets the wait
    third = only_pod(h)
    h.dep.pool.attached(third.uid)
    assert h.dep.pool.ready == 1
    condition = next(c for c in h.dep.conditions() if c.type == "WarmPoolDegraded")
    assert (condition.status, condition.reason) == (False, "PoolHealthy")
    taken = h.dep.pool.take(h.dep.spec.template_hash() if h.dep.spec else "")
    assert taken is not None
    assert taken.uid == third.uid
    await h.dep.pool.reconcile()
    fourth = only_pod(h)
    await h.dep.pool.failed(fourth.uid, "PrewarmFailed", "boom")
    assert "replaced in 2s" in h.events.recorded[-1][1]


async def test_a_pool_pod_whose_runner_never_attaches_has_failed_too() -> None:
    """A prewarm that hangs in a runtime without a timeout of its own (a native agent's import)
    is bounded by the start timeout; the pod is then a failure like any other."""
    h, clock = pool_harness()
    await h.dep.pool.reconcile()
    first = only_pod(h)
    clock.now += h.dep.heartbeat().start_timeout + 1
    await h.dep.pool.reconcile()
    await settle()
    assert [pod.uid for pod, _ in h.pods.deleted] == [first.uid]
    assert len(h.pods.created) == 1, "its replacement waits"
    [(reason, message)] = h.events.recorded
    assert reason == "PoolPodFailed"
    assert "AttachTimeout" in message
    assert "did not attach" in message


def pod_body(pod: PodIdentity, waiting_reason: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "labels": {"agentoperator.dev/deployment": "voice"},
        },
        "spec": {},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "agent",
                    "image": "registry.example.com/agent:nope",
                    "state": {"waiting": {"reason": waiting_reason, "message": "not found"}},
                }
            ],
        },
    }


async def test_an_idle_pod_whose_image_cannot_be_pulled_is_replaced_with_backoff() -> None:
    h, clock = pool_harness()
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    runtime.supervisor = cast(Any, h.supervisor)
    runtime.pods = cast(Any, h.pods)
    runtime.deployments[("ns", "voice")] = h.dep
    await h.dep.pool.reconcile()
    first = only_pod(h)
    await runtime.on_pod_event("MODIFIED", pod_body(first, "ErrImagePull"))
    await runtime.on_pod_event("MODIFIED", pod_body(first, "ImagePullBackOff"))  # the same pod
    await settle()
    assert [pod.uid for pod, _ in h.pods.deleted] == [first.uid]
    [(reason, message)] = h.events.recorded
    assert reason == "PoolPodFailed"
    assert "ErrImagePull" in message
    assert "check the template's image name" in message
    condition = next(c for c in h.dep.conditions() if c.type == "WarmPoolDegraded")
    assert (condition.status, condition.reason) == (True, "ErrImagePull")
    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 1
    clock.now += 2.0
    await h.dep.pool.reconcile()
    assert len(h.pods.created) == 2


async def test_a_prewarm_failure_reported_by_the_supervisor_reaches_the_pool() -> None:
    h, _ = pool_harness()
    runtime = OperatorRuntime(OperatorConfig(runner_address="127.0.0.1:50051"))
    runtime.deployments[("ns", "voice")] = h.dep
    await h.dep.pool.reconcile()
    first = only_pod(h)
    binding = RunnerBinding(first, DeploymentRef("ns", "voice"), HeartbeatSettings())
    await runtime.router.runner_prewarm_failed(binding, "cannot import agent: ModuleNotFoundError")
    await settle()
    assert h.dep.pool.ready == 0
    assert [pod.uid for pod, _ in h.pods.deleted] == [first.uid]
    assert "ModuleNotFoundError" in h.events.recorded[0][1]


async def test_a_pool_scaled_to_zero_is_not_degraded() -> None:
    h, _ = pool_harness()
    await h.dep.pool.reconcile()
    await h.dep.pool.failed(only_pod(h).uid, "PrewarmFailed", "boom")
    assert h.dep.pool.failure is not None
    h.dep.update(spec(maxConcurrentJobs=4, warmPool={"size": 0}), 2)
    after: object = h.dep.pool.failure  # (mypy keeps the narrowing above across the call)
    assert after is None
    condition = next(c for c in h.dep.conditions() if c.type == "WarmPoolDegraded")
    assert condition.status is False


def test_the_condition_names_the_last_failure() -> None:
    backoff = PoolBackoff()
    backoff.failed(0.0, "PrewarmFailed", "a")
    condition = warm_pool(backoff.failed(0.0, "Unschedulable", "no node fits"))
    assert (condition.type, condition.status, condition.reason) == ("WarmPoolDegraded", True, "Unschedulable")
    assert condition.message == "2 pool pods failed in a row, the last: no node fits; the next waits 4s"
