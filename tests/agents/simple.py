"""Small entrypoints for the runner's end-to-end tests, each showing one way a job can go."""

from __future__ import annotations

import asyncio
import logging
import math
import struct

from livekit import rtc

from agent_jobrunner import JobContext

logger = logging.getLogger("tests.agents.simple")

DATA_TOPIC = "agent-test"
SAMPLE_RATE = 48_000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms


def _describe(ctx: JobContext) -> dict[str, str]:
    return {
        "job_id": ctx.job.id,
        "room_name": ctx.room.name,
        "agent_identity": ctx.agent.identity,
        "url": ctx.url,
        "p_identity": ctx.participant_identity,
        "p_name": ctx.participant_name,
        "p_metadata": ctx.participant_metadata,
        "p_attributes": ",".join(f"{k}={v}" for k, v in sorted(ctx.participant_attributes.items())),
    }


def _tone_frame(start: int) -> rtc.AudioFrame:
    samples = [
        int(8000 * math.sin(2 * math.pi * 440 * (start + i) / SAMPLE_RATE)) for i in range(FRAME_SAMPLES)
    ]
    return rtc.AudioFrame(struct.pack(f"<{FRAME_SAMPLES}h", *samples), SAMPLE_RATE, 1, FRAME_SAMPLES)


async def _play_tone(source: rtc.AudioSource) -> None:
    n = 0
    while True:
        await source.capture_frame(_tone_frame(n))
        n += FRAME_SAMPLES


async def publish_and_wait(ctx: JobContext) -> None:
    """Publish an audio track and repeat a data message until the job is ended from outside."""

    async def on_shutdown(reason: str) -> None:
        logger.info("shutdown callback ran", extra={"shutdown_reason": reason})

    ctx.add_shutdown_callback(on_shutdown)
    logger.info("entrypoint started", extra=_describe(ctx))
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("agent-tone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.agent.publish_track(track, options)
    tone = asyncio.create_task(_play_tone(source))
    try:
        while True:
            await ctx.agent.publish_data(b"hello from the agent", topic=DATA_TOPIC)
            await asyncio.sleep(0.3)
    finally:
        tone.cancel()
        await asyncio.gather(tone, return_exceptions=True)
        await source.aclose()


async def _say_goodbye(ctx: JobContext) -> None:
    # publish_data() returns before the packet is on the wire, and right after joining the
    # peer connection may still be coming up: leaving at once can lose it. Repeat a little.
    for _ in range(5):
        await ctx.agent.publish_data(b"bye from the agent", topic=DATA_TOPIC)
        await asyncio.sleep(0.2)


async def shutdown_after_publish(ctx: JobContext) -> None:
    """Say goodbye, end the job with ctx.shutdown() and keep waiting (the runner cancels us)."""
    logger.info("entrypoint started", extra=_describe(ctx))
    await _say_goodbye(ctx)
    ctx.shutdown("the agent is done")
    await asyncio.Event().wait()


async def return_after_publish(ctx: JobContext) -> None:
    """Say goodbye and return."""
    await _say_goodbye(ctx)


async def wait_forever(ctx: JobContext) -> None:
    logger.info("entrypoint started", extra=_describe(ctx))
    await asyncio.Event().wait()


async def raises(ctx: JobContext) -> None:
    logger.info("entrypoint started", extra=_describe(ctx))
    await asyncio.sleep(0.2)
    raise RuntimeError("boom from the entrypoint")


async def slow_to_cancel(ctx: JobContext) -> None:
    """Ignores cancellation for a second (cleanup work), then ends."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        logger.info("cancelled; cleaning up for a second")
        await asyncio.sleep(1.0)
        logger.info("cleanup done")
        raise


async def ignores_cancellation(ctx: JobContext) -> None:
    """Never ends: the runner has to give up on it."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            logger.info("ignoring cancellation")


async def chatty(ctx: JobContext) -> None:
    """Logs records that exercise forwarding: extras, an exception, a record too big for a message."""
    logger.info("record with extras", extra={"answer": 42, "who": "agent"})
    try:
        raise ValueError("an exception to format")
    except ValueError:
        logger.exception("record with an exception")
    logger.warning("huge record %s", "x" * (3 * 1024 * 1024))
    logger.debug("a debug record from the entrypoint")
    logging.getLogger("grpc._test").debug("internal debug chatter")
    logger.info("chatty done")
    await asyncio.Event().wait()


async def report_subscriptions(ctx: JobContext) -> None:
    """Logs every track the runner's subscribe policy made us subscribe to."""

    def on_subscribed(
        track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        kind = "audio" if publication.kind == rtc.TrackKind.KIND_AUDIO else "video"
        logger.info("subscribed", extra={"kind": kind, "track_name": publication.name})

    ctx.room.on("track_subscribed", on_subscribed)
    for participant in ctx.room.remote_participants.values():
        for publication in participant.track_publications.values():
            if publication.track is not None:
                on_subscribed(publication.track, publication, participant)
    logger.info("entrypoint started", extra=_describe(ctx))
    await asyncio.Event().wait()


def not_async(ctx: JobContext) -> None:
    """Not a coroutine function: a bad entrypoint."""
