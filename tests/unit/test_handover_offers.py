"""Offers that come while this operator hands over to the next one (``handover.pass_on``).

LiveKit drops a job that every registered worker declined (livekit-server's JobRequest
tries each available worker once, then gives up). A held offer declined before the next
operator's worker is registered is a dispatch lost: under load the next operator took 6.3 s
to serve, and the nine calls dispatched in that time got no agent."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit.protocol import agent

from agent_operator.handover import hold_left
from agent_operator.jobs import Phase
from tests.support.deployment_fakes import assignment, harness, offer, settle

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


async def test_a_job_being_placed_when_the_operator_stops_gets_its_pod_first() -> None:
    """The leaving operator took a call (above) and is creating its pod when the handover
    ends and it stops. Cancelling that would leave a job LiveKit thinks is running with no
    pod for the next operator to resume it from; the stop waits for the placement."""
    h = harness(registered=False)
    stopping = asyncio.Event()
    running = asyncio.ensure_future(h.dep.run(stopping, lambda: False))
    await settle()
    h.pods.create_gate.close()
    await h.dep.assignment(assignment("J1"))
    await settle(lambda: h.pods.create_gate.waiting)
    stopping.set()
    h.dep._changed.set()  # wakes the registration loop, as a spec change does
    await asyncio.sleep(0.2)
    h.pods.create_gate.open()
    await asyncio.wait_for(running, 20)
    assert len(h.pods.created) == 1, "the job's pod was made: the next operator resumes it from there"
    assert [uid for uid, _, _ in h.supervisor.assigned] == [h.pods.created[0].uid]


def test_the_hold_counts_from_when_livekit_sent_the_offer() -> None:
    """Under load the old operator read offers 2-3 s after LiveKit sent them, then held them
    2 s more: past LiveKit's 3 s job request deadline ("context deadline exceeded" in its
    log), so even a decline came too late for the next worker to get the job."""
    now = 1_000_000.0
    sent = agent.Job(id="J1", state=agent.JobState(updated_at=int((now - 1.5) * 1e9)))
    assert hold_left(sent, 2.0, now) == pytest.approx(0.5)
    late = agent.Job(id="J2", state=agent.JobState(updated_at=int((now - 2.5) * 1e9)))
    assert hold_left(late, 2.0, now) == 0.0
    assert hold_left(agent.Job(id="J3"), 2.0, now) == 2.0, "no send time: the whole hold"
    skewed = agent.Job(id="J4", state=agent.JobState(updated_at=int((now + 30) * 1e9)))
    assert hold_left(skewed, 2.0, now) == 2.0, "a clock ahead of ours is not trusted"


async def test_an_offer_read_late_is_answered_within_what_is_left_of_the_hold() -> None:
    h = harness()
    handover = h.dep.services.handover
    handover.active, handover.hold = True, 2.0
    request = offer("J1")
    request.job.state.updated_at = int((time.time() - 1.9) * 1e9)  # LiveKit sent it 1.9 s ago
    assert h.dep.availability(request) is None
    await settle(lambda: h.reports.answers, timeout=1.0)
    assert h.reports.answers[0].available, "taken here: the next operator does not serve yet"
