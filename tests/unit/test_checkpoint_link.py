"""A job's checkpoints (issue 15): numbered, deduplicated, bounded, and on the real link only
the latest is kept while detached and sent again after a re-attach."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent_jobrunner.checkpoint import (
    MAX_CHECKPOINT_BYTES,
    Checkpointer,
    CheckpointTooLarge,
    encode_state,
    restored_state,
)
from agent_jobrunner.link import OperatorLink, StreamFinished
from agent_jobrunner.protocol import pb
from tests.unit.test_link_rewrite import FinishedCall, OpenCall
from tests.unit.test_link_rewrite import link as base_link

pytestmark = pytest.mark.unit


def make_link() -> OperatorLink:
    link = base_link()
    link._hello_state = lambda: (pb.RUNNER_STATE_RUNNING, None, "")
    return link


async def written_by(link: OperatorLink, count: int) -> list[pb.RunnerMessage]:
    """What the link writes on a fresh open stream until ``count`` messages are out (then a
    moment more: nothing else must follow)."""
    call = OpenCall()
    sending = asyncio.create_task(link._send_loop(call))
    try:
        async with asyncio.timeout(5):
            while len(call.written) < count:
                call.wrote.clear()
                await call.wrote.wait()
        await asyncio.sleep(0.05)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
    return call.written


def attach(link: OperatorLink) -> None:
    link._on_attached(pb.Welcome(session_id="s"), asyncio.get_running_loop())


def detach(link: OperatorLink) -> None:
    link._on_detached()


def states(messages: list[pb.RunnerMessage]) -> list[tuple[int, dict[str, object]]]:
    return [(m.checkpoint.seq, json.loads(m.checkpoint.state)) for m in messages if m.HasField("checkpoint")]


class Sink:
    def __init__(self) -> None:
        self.sent: list[pb.RunnerMessage] = []

    def send_checkpoint(self, message: pb.RunnerMessage) -> None:
        self.sent.append(message)


def test_seq_goes_on_from_the_restored_one_and_equal_states_are_not_resent() -> None:
    sink = Sink()
    checkpoints = Checkpointer("AJ_1", sink, restored_seq=7)
    assert checkpoints.update({"turn": 1, "chat": ["a"]})
    assert not checkpoints.update({"chat": ["a"], "turn": 1})  # the same state, keys in another order
    assert checkpoints.update({"turn": 2, "chat": ["a", "b"]})
    assert [(m.checkpoint.job_id, m.checkpoint.seq) for m in sink.sent] == [("AJ_1", 8), ("AJ_1", 9)]
    assert sink.sent[0].checkpoint.state == b'{"chat":["a"],"turn":1}'  # compact, sorted keys
    assert checkpoints.seq == 9


def test_a_state_over_the_bound_is_refused_and_nothing_is_sent() -> None:
    sink = Sink()
    checkpoints = Checkpointer("AJ_1", sink)
    room = MAX_CHECKPOINT_BYTES - len(encode_state({"x": ""}))
    assert checkpoints.update({"x": "a" * room})  # exactly at the bound
    with pytest.raises(CheckpointTooLarge, match=f"over the bound of {MAX_CHECKPOINT_BYTES} bytes"):
        checkpoints.update({"x": "a" * (room + 1)})
    with pytest.raises(TypeError):
        checkpoints.update({"x": object()})
    assert len(sink.sent) == 1
    assert checkpoints.seq == 1


async def test_while_detached_only_the_latest_is_kept_and_it_goes_after_the_status() -> None:
    link = make_link()
    checkpoints = Checkpointer("AJ_1", link)
    status = pb.RunnerMessage(job_status=pb.JobStatus(job_id="AJ_1", state=pb.JOB_STATE_RUNNING))
    checkpoints.update({"turn": 1})
    link.send(status)
    checkpoints.update({"turn": 2})
    checkpoints.update({"turn": 3})
    attach(link)
    out = await written_by(link, 2)
    assert out[0] == status  # never overtaken by a checkpoint
    assert states(out) == [(3, {"turn": 3})]
    assert len(out) == 2


async def test_the_latest_is_sent_again_after_a_re_attach() -> None:
    link = make_link()
    checkpoints = Checkpointer("AJ_1", link, restored_seq=4)
    attach(link)
    checkpoints.update({"turn": 1})
    assert states(await written_by(link, 1)) == [(5, {"turn": 1})]
    assert await written_by(link, 0) == []  # written once per stream
    detach(link)
    attach(link)  # a new operator (a restart, a handover): it gets the latest at once
    assert states(await written_by(link, 1)) == [(5, {"turn": 1})]


async def test_a_checkpoint_whose_write_failed_is_not_queued_as_a_control_message() -> None:
    link = make_link()
    checkpoints = Checkpointer("AJ_1", link)
    attach(link)
    checkpoints.update({"turn": 1})
    with pytest.raises(StreamFinished):
        await link._send_loop(FinishedCall())
    detach(link)
    checkpoints.update({"turn": 2})
    link.send(pb.RunnerMessage(job_status=pb.JobStatus(job_id="AJ_1", state=pb.JOB_STATE_SUCCEEDED)))
    attach(link)
    out = await written_by(link, 2)
    assert out[0].HasField("job_status")
    assert states(out) == [(2, {"turn": 2})]  # the newer one only; the failed one not sent late


def test_the_restored_state_of_a_start_request() -> None:
    assert restored_state(pb.StartJobRequest()) is None
    assert restored_state(pb.StartJobRequest(restored_state=b'{"turn":2}')) == {"turn": 2}


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_an_unreadable_restored_state_is_a_warning_not_a_failure(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert restored_state(pb.StartJobRequest(restored_state=data)) is None
    assert "starting afresh" in caplog.text


def test_a_closed_checkpointer_sends_nothing() -> None:
    sink = Sink()
    checkpoints = Checkpointer("AJ_1", sink)
    checkpoints.update({"turn": 1})
    checkpoints.close()  # the job is ending
    assert not checkpoints.update({"turn": 2})
    assert [m.checkpoint.seq for m in sink.sent] == [1]
