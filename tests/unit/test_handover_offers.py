"""Offers that come while this operator hands over to the next one (``handover.pass_on``).

LiveKit drops a job that every registered worker declined (livekit-server's JobRequest
tries each available worker once, then gives up). A held offer declined before the next
operator's worker is registered is a dispatch lost: under load the next operator took 6.3 s
to serve, and the nine calls dispatched in that time got no agent."""

from __future__ import annotations

import asyncio

import pytest

from agent_operator.jobs import Phase
from tests.support.deployment_fakes import harness, offer, settle

pytestmark = pytest.mark.unit


async def test_an_offer_held_while_the_next_operator_is_slow_to_serve_is_taken_here() -> None:
    h = harness()
    handover = h.dep.services.handover
    handover.active, handover.hold = True, 0.05
    assert h.dep.availability(offer("J1")) is None  # held, answered later
    await settle(lambda: h.reports.answers)
    (answer,) = h.reports.answers
    assert (answer.job_id, answer.available) == ("J1", True), "declined with no other worker registered"
    entry = h.dep.jobs.get("J1")
    assert entry is not None
    assert entry.phase is Phase.OFFERED


async def test_an_offer_held_until_the_next_operator_serves_is_passed_on() -> None:
    h = harness()
    handover = h.dep.services.handover
    handover.active, handover.hold = True, 5.0
    assert h.dep.availability(offer("J1")) is None
    await asyncio.sleep(0.05)
    assert h.reports.answers == []
    handover.successor_serving = True
    handover.successor_ready.set()
    await settle(lambda: h.reports.answers)
    (answer,) = h.reports.answers
    assert (answer.job_id, answer.available) == ("J1", False)
    assert "J1" not in h.dep.jobs
