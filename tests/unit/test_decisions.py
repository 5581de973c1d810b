"""Availability, load and naming decisions."""

from __future__ import annotations

import re
import struct

import pytest
from livekit.protocol import agent, models

from agent_operator.decisions import Capacity, availability, worker_status
from agent_operator.templates import TemplateError, check, pod_name, render

pytestmark = pytest.mark.unit


def cap(**kw: object) -> Capacity:
    base: dict[str, object] = {
        "max_jobs": 2,
        "running": 0,
        "reserved": 0,
        "registered": True,
        "draining": False,
        "target_load": 0.7,
    }
    base.update(kw)
    return Capacity(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "accept", "reason"),
    [
        ({}, True, "accepted"),
        ({"running": 1, "reserved": 1}, False, "at_capacity"),
        ({"running": 1}, True, "accepted"),
        ({"draining": True}, False, "draining"),
        ({"registered": False}, False, "not_registered"),
        ({"blocked_reason": "secret missing"}, False, "blocked"),
    ],
)
def test_availability(kw: dict[str, object], accept: bool, reason: str) -> None:
    verdict = availability(cap(**kw))
    assert (verdict.accept, verdict.reason) == (accept, reason)


def test_status_reports_the_load_scaled_to_livekits_target() -> None:
    s = worker_status(cap(running=1))
    assert s.load == pytest.approx(0.35)  # half the capacity: half of the target load
    assert s.status == agent.WS_AVAILABLE
    assert s.job_count == 1
    full = worker_status(cap(running=1, reserved=1))
    assert full.status == agent.WS_FULL
    assert full.load == pytest.approx(1.0)
    assert worker_status(cap(draining=True)).draining


@pytest.mark.parametrize("target", [0.7, 0.5, 1.0])
@pytest.mark.parametrize("max_jobs", [1, 4, 40, 10000])
def test_livekit_offers_jobs_until_max_concurrent_jobs(target: float, max_jobs: int) -> None:
    """livekit-server offers a job only to a worker with load < target_load, comparing in
    float32 (the proto's type): every slot below max_jobs is offered, none beyond it."""

    def offered(used: int) -> bool:
        status = worker_status(cap(max_jobs=max_jobs, running=used, target_load=target))
        wire = agent.UpdateWorkerStatus.FromString(status.SerializeToString())  # float32 on the wire
        return wire.status == agent.WS_AVAILABLE and struct_f32(target) - wire.load > 0

    assert [offered(used) for used in range(max_jobs - 1, max_jobs + 1)] == [True, False]
    assert offered(0)
    loads = [
        worker_status(cap(max_jobs=max_jobs, running=u, target_load=target)).load for u in range(max_jobs)
    ]
    assert loads == sorted(loads)  # busier workers still weigh less in LiveKit's choice


def struct_f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def test_render_templates() -> None:
    job = agent.Job(id="AJ_x", room=models.Room(name="r1"), agent_name="bot")
    assert render("agent-{job_id}@{room}/{agent_name}/{deployment}", job, "dep") == "agent-AJ_x@r1/bot/dep"
    assert render("{{literal}}-{room}", job, "dep") == "{literal}-r1"


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("agent-{job_id", "expected '}'"),
        ("agent-}", "Single '}'"),
        ("{nope}", "unknown field {nope}"),
        ("{room!r}", "no format spec or conversion"),
        ("{room:>9}", "no format spec or conversion"),
        ("{room.x}", "unknown field"),
    ],
)
def test_a_template_that_cannot_render_is_refused_when_checked(template: str, why: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(why)):
        check(template)


def test_pod_names_are_valid_and_bounded() -> None:
    name = pod_name("a" * 80, "AJ_UPPER_and_lower", "x1y2")
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)
    assert name.endswith("-x1y2")
    assert "aj-upper-and-lower" in pod_name("dep", "AJ_UPPER_and_lower", "x1y2")
