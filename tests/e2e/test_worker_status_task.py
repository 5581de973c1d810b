"""The worker connection's status loop, against the real livekit-server: if it dies, the
connection notices (issue 14, defect 13: with livekit-protocol 1.0, which the floor allowed,
building UpdateWorkerStatus raised on its unknown ``draining`` field and the status task died
unseen, while the worker stayed registered with a status LiveKit no longer heard about)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import pytest
from livekit.protocol import agent

from agent_operator.worker import WorkerConnection, WorkerOptions
from devenv.livekit import LiveKitAccess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class StatusFails:
    """A worker handler whose status cannot be built, as with a protocol release that lacks a field."""

    def __init__(self) -> None:
        self.worker_ids: list[str] = []
        self.disconnects: list[str] = []

    def availability(self, request: agent.AvailabilityRequest) -> agent.AvailabilityResponse | None:
        return agent.AvailabilityResponse(job_id=request.job.id, available=False)

    async def assignment(self, assignment: agent.JobAssignment) -> None:
        return None

    async def termination(self, termination: agent.JobTermination) -> None:
        return None

    async def registered(self, worker_id: str) -> None:
        self.worker_ids.append(worker_id)

    async def disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    def status(self) -> agent.UpdateWorkerStatus:
        raise ValueError('Protocol message UpdateWorkerStatus has no "draining" field.')

    def running_job_ids(self) -> list[str]:
        return []


async def test_a_status_loop_that_dies_ends_the_session_loudly(
    livekit: LiveKitAccess, caplog: pytest.LogCaptureFixture
) -> None:
    handler = StatusFails()
    options = WorkerOptions(
        url=livekit.url,
        api_key=livekit.api_key,
        api_secret=livekit.api_secret,
        agent_name=f"status-{uuid.uuid4().hex[:6]}",
    )
    connection = WorkerConnection(options, handler, {"deployment": "test/status"})
    with caplog.at_level(logging.ERROR, "agent_operator.worker"):
        task = asyncio.create_task(connection.run())
        try:
            for _ in range(300):
                if handler.disconnects:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await connection.close()
    assert handler.worker_ids, "the worker registered with the real server"
    assert handler.disconnects, "the dead status loop went unnoticed: the session stayed up"
    assert "worker status updates stopped (ValueError" in handler.disconnects[0]
    errors = [r for r in caplog.records if r.getMessage().startswith("worker status updates stopped")]
    assert errors, "the failure is logged"
    assert errors[0].exc_info is not None
    assert errors[0].deployment == "test/status"  # type: ignore[attr-defined]
