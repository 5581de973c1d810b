"""Issue 15, "a checkpoint must survive an operator restart": the checkpoint is kept on the
job's pod, sealed (AES-GCM, a key derived from the LiveKit API secret, bound to the deployment
and the job), written at most about once a second, the latest winning; a restarted job's new
pod carries its checkpoint and its signed restart count from its creation. Real crypto."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any, cast

import pytest

from agent_jobrunner.protocol import MAX_CHECKPOINT_BYTES, pb
from agent_operator import resume
from agent_operator.checkpoint_keeper import CheckpointKeeper
from agent_operator.kube import pod_checkpoint, pod_trust
from agent_operator.kube.pod_checkpoint import ANNOTATION_CHECKPOINT, checkpoint_key, open_sealed, seal
from agent_operator.kube.podspec import ANNOTATION_START, Owner
from agent_operator.resume import MAX_ANNOTATION_BYTES
from agent_operator.supervisor import JobOutcome, OutcomeStatus
from agent_operator.supervisor.types import DEATH_EXITED
from agent_operator.vocabulary import PodIdentity
from tests.support.deployment_fakes import FakePods, harness, settle
from tests.unit.test_failover import checkpoint, running

pytestmark = pytest.mark.unit

OWNER = Owner("ns", "voice", "uid-voice")
KEY = checkpoint_key("secret")
DIED = JobOutcome(OutcomeStatus.FAILED, "runner exited", "exit code 137, Error", death=DEATH_EXITED)


def test_a_sealed_checkpoint_opens_for_its_job_only_and_hides_the_conversation() -> None:
    kept = checkpoint("J1", 7, 3)
    text = seal(KEY, OWNER, kept)
    opened = open_sealed(KEY, OWNER, "J1", text)
    assert opened == kept
    assert b"paris" not in base64.b64decode(text.partition(".")[2]), "the caller's words are encrypted"
    assert seal(KEY, OWNER, kept) != text, "a fresh nonce each time"
    # moved to another job's pod, or another deployment's (same name, recreated), or read with
    # another secret: refused
    assert open_sealed(KEY, OWNER, "J2", text) is None
    assert open_sealed(KEY, Owner("ns", "voice", "uid-other"), "J1", text) is None
    assert open_sealed(KEY, Owner("other-ns", "voice", "uid-voice"), "J1", text) is None
    assert open_sealed(checkpoint_key("another secret"), OWNER, "J1", text) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-6] + ("A" if t[-6] != "A" else "B") + t[-5:],  # a byte of the tag changed
        lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],  # a byte of the nonce changed
        lambda t: "v2" + t[2:],
        lambda t: t.partition(".")[0] + ".not base64!",
        lambda t: t[:20],  # cut short
        lambda t: "",
    ],
    ids=["tag", "nonce", "version", "garbage", "short", "empty"],
)
def test_a_tampered_checkpoint_is_refused(tamper: Any) -> None:
    text = seal(KEY, OWNER, checkpoint("J1", 7, 3))
    assert open_sealed(KEY, OWNER, "J1", tamper(text)) is None


def test_a_forged_checkpoint_of_another_job_sealed_with_the_right_key_is_refused() -> None:
    """Only the operator seals (it holds the secret), but even its own sealing of one job's
    checkpoint cannot pass for another job's: the job id is sealed inside and bound outside."""
    other = checkpoint("J2", 9, 9)
    assert open_sealed(KEY, OWNER, "J1", seal(KEY, OWNER, other)) is None


def test_the_largest_checkpoint_fits_the_pods_annotations() -> None:
    state = json.dumps({"chat": "x" * (MAX_CHECKPOINT_BYTES - 20)}).encode()[:MAX_CHECKPOINT_BYTES]
    text = seal(KEY, OWNER, pb.Checkpoint(job_id="J" * 64, seq=2**63, state=state))
    assert len(text) < 44 * 1024
    assert len(text) + MAX_ANNOTATION_BYTES < 256 * 1024 // 2, "with the start request, well within 256 KiB"


def _keeper(pods: FakePods, current: dict[str, PodIdentity], interval: float) -> CheckpointKeeper:
    return CheckpointKeeper(
        pods, lambda c: seal(KEY, OWNER, c), current.get, {"deployment": "ns/voice"}, interval=interval
    )


def _seqs(pods: FakePods, job_id: str = "J1") -> list[int]:
    seqs = []
    for _, written in pods.annotated:
        opened = open_sealed(KEY, OWNER, job_id, written[ANNOTATION_CHECKPOINT])
        assert opened is not None
        seqs.append(opened.seq)
    return seqs


async def test_the_keeper_writes_the_first_at_once_then_the_latest_at_most_once_per_interval() -> None:
    pods = FakePods()
    pod = PodIdentity("ns", "voice-j1", "uid-1")
    keeper = _keeper(pods, {"J1": pod}, interval=0.3)
    pods.annotate_gate.close()
    keeper.keep(pod, checkpoint("J1", 1, 1))
    await settle(lambda: pods.annotate_gate.waiting == 1)  # the first write is under way
    for seq in (2, 3, 4):  # while it is: only the latest of these is written next
        keeper.keep(pod, checkpoint("J1", seq, seq))
    pods.annotate_gate.open()
    await settle(lambda: len(pods.annotated) == 1)
    await asyncio.sleep(0.1)
    assert _seqs(pods) == [1], "nothing more within the interval"
    await settle(lambda: len(pods.annotated) == 2)
    assert _seqs(pods) == [1, 4]
    assert pods.annotated[0][0] == pod
    await settle(lambda: len(keeper) == 0, timeout=2)  # nothing left: the writer ends
    keeper.keep(pod, checkpoint("J1", 5, 5))
    await settle(lambda: len(pods.annotated) == 3)
    assert _seqs(pods) == [1, 4, 5]
    await keeper.close()


async def test_the_keeper_writes_nothing_on_a_pod_that_is_no_longer_the_jobs() -> None:
    pods = FakePods()
    old, new = PodIdentity("ns", "voice-j1", "uid-1"), PodIdentity("ns", "voice-j1-b", "uid-2")
    current = {"J1": new}  # restarted on a new pod meanwhile
    keeper = _keeper(pods, current, interval=0.01)
    keeper.keep(old, checkpoint("J1", 1, 1))
    await settle(lambda: len(keeper) == 0)
    assert pods.annotated == []
    del current["J1"]  # ended
    keeper.keep(new, checkpoint("J1", 2, 2))
    await settle(lambda: len(keeper) == 0)
    assert pods.annotated == []
    await keeper.close()


async def test_a_failed_write_is_logged_once_and_the_next_checkpoint_is_the_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pods = FakePods()
    pod = PodIdentity("ns", "voice-j1", "uid-1")
    keeper = _keeper(pods, {"J1": pod}, interval=0.01)
    pods.annotate_error = OSError("connection refused")
    with caplog.at_level(logging.INFO, logger="agent_operator.deployment"):
        for seq in (1, 2, 3):
            keeper.keep(pod, checkpoint("J1", seq, seq))
            await settle(lambda: len(keeper) == 0)
        assert pods.annotated == [], "nothing written, nothing retried on its own"
        pods.annotate_error = None
        keeper.keep(pod, checkpoint("J1", 4, 4))
        await settle(lambda: len(keeper) == 0)
    assert _seqs(pods) == [4]
    warnings = [r for r in caplog.records if "could not keep the job's checkpoint" in r.getMessage()]
    assert len(warnings) == 1
    assert "connection refused" in warnings[0].getMessage()
    assert any("kept on its pod again" in r.getMessage() for r in caplog.records)
    assert not any("paris" in r.getMessage() for r in caplog.records), "no conversation in the logs"
    await keeper.close()


async def test_a_running_jobs_checkpoint_is_kept_on_its_pod_sealed_for_it() -> None:
    h = harness()
    first = await running(h)
    h.dep.job_checkpoint(first, checkpoint("J1", 2, 1))
    await settle(lambda: h.pods.annotated)
    ((pod, annotations),) = h.pods.annotated
    assert pod == first.pod
    kept = h.dep.trust.open_checkpoint({"metadata": {"annotations": annotations}}, "J1")
    assert kept is not None
    assert (kept.seq, json.loads(kept.state)["turn"]) == (2, 1)
    h.dep.job_checkpoint(first, checkpoint("J1", 1, 0))  # older: neither taken nor written
    await h.dep.failover.close()
    assert len(h.pods.annotated) == 1


async def test_a_restarted_jobs_new_pod_carries_its_checkpoint_and_its_signed_restart_count() -> None:
    """Cold path: the pod is created with both; the start request's restarts is signed."""
    h = harness()
    first = await running(h)
    h.dep.job_checkpoint(first, checkpoint("J1", 3, 2))
    await h.dep.job_ended(first, DIED)
    await settle(lambda: len(h.supervisor.assigned) == 2)
    uid2 = h.supervisor.assigned[1][0]
    body = cast(dict[str, Any], h.pods.bodies[uid2])
    annotations = body["metadata"]["annotations"]
    kept = open_sealed(KEY, OWNER, "J1", annotations[ANNOTATION_CHECKPOINT])
    assert kept is not None
    assert kept.seq == 3
    start = resume.decode(annotations[ANNOTATION_START])
    assert start is not None
    assert start.restarts == 1
    assert not start.restored_state, "the conversation is only in the sealed annotation"
    assert pod_trust.untrusted(body, "uid-voice", pod_trust.signing_key("secret")) == ""
    annotations[ANNOTATION_START] = resume.encode(pb.StartJobRequest(job=start.job, restarts=0))
    assert "signature" in pod_trust.untrusted(body, "uid-voice", pod_trust.signing_key("secret"))
    await h.dep.failover.close()


async def test_a_restarted_job_on_a_pool_pod_gets_its_checkpoint_with_the_job() -> None:
    """Warm path: the patch that gives the pool pod the job (``mark_busy``) carries both."""
    h = harness()
    first = await running(h)
    h.dep.job_checkpoint(first, checkpoint("J1", 3, 2))
    current = h.dep.spec.template_hash() if h.dep.spec else ""
    idle = PodIdentity("ns", "voice-pool-1", "pool-1")
    h.dep.expect(idle, h.dep.heartbeat())
    h.dep.pool.adopt(idle, current, None)
    h.dep.pool.attached("pool-1")
    await h.dep.job_ended(first, DIED)
    await settle(lambda: h.pods.busy_info)
    ((pod, info),) = h.pods.busy_info
    assert pod == idle
    kept = pod_checkpoint.open_sealed(KEY, OWNER, "J1", info.checkpoint)
    assert kept is not None
    assert kept.seq == 3
    start = resume.decode(info.start_request)
    assert start is not None
    assert start.restarts == 1
    await h.dep.failover.close()
