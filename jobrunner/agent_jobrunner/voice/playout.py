"""The agent's voice in the room: one published audio track, and playback of one reply at a time.

Frames go to the track's ``AudioSource``, whose queue is kept short (``queue_ms``) so that
``capture_frame`` paces playback in real time: what has been captured minus what is still
queued is what the room has heard, and an interruption drops at most one queue of audio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from livekit import rtc

from agent_jobrunner.voice.audio import ROOM_SAMPLE_RATE, Framer, Pcm, Resampler


class AudioOutput:
    def __init__(
        self,
        sample_rate: int = ROOM_SAMPLE_RATE,
        frame_ms: int = 20,
        queue_ms: int = 200,
        track_name: str = "agent-voice",
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.source = rtc.AudioSource(sample_rate, 1, queue_size_ms=queue_ms)
        self.track = rtc.LocalAudioTrack.create_audio_track(track_name, self.source)
        self.publication: rtc.LocalTrackPublication | None = None
        self._inflight: asyncio.Future[None] | None = None

    async def publish(self, participant: rtc.LocalParticipant) -> None:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self.publication = await participant.publish_track(self.track, options)

    async def unpublish(self, participant: rtc.LocalParticipant) -> None:
        if self.publication is not None:
            await participant.unpublish_track(self.publication.sid)
            self.publication = None

    def playback(self) -> Playback:
        return Playback(self)

    async def capture(self, frame: rtc.AudioFrame) -> None:
        """Queue one frame for the room, waiting while the source's queue is full.

        A capture is never cancelled half way: the native source refuses the next frame
        until a pending one completes, so a cancelled caller leaves it to finish alone
        (after an interruption's ``clear_queue`` that is at once) and the next capture waits
        for it.
        """
        previous = self._inflight
        if previous is not None and not previous.done():
            await asyncio.shield(previous)
        capture = asyncio.ensure_future(self.source.capture_frame(frame))
        capture.add_done_callback(_consume_error)
        self._inflight = capture
        await asyncio.shield(capture)

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self.source.clear_queue()
            await asyncio.wait({self._inflight}, timeout=1.0)
        await self.source.aclose()


@dataclasses.dataclass
class Segment:
    """The audio of one sentence, as it was played."""

    index: int  # the sentence's place in the reply
    text: str
    tag: int  # which part of the reply the sentence belongs to (the LLM round)
    start: float  # seconds into the playback
    duration: float = 0.0  # captured so far
    written: float = 0.0  # handed to ``write`` so far (ahead of the capture by the resampler's delay)
    complete: bool = False  # all of its audio was captured


class Playback:
    """One reply's audio: ``write`` sentence audio in order, then ``finish`` (or ``interrupt``)."""

    def __init__(self, output: AudioOutput) -> None:
        self._output = output
        self._framer = Framer.of_ms(output.sample_rate, output.frame_ms)
        self._resampler: Resampler | None = None
        self._segments: list[Segment] = []
        self._captured = 0.0
        self._heard_at_stop: float | None = None
        self.first_frame_at: float | None = None
        self.interrupted = False

    @property
    def started(self) -> bool:
        return self.first_frame_at is not None

    @property
    def played(self) -> float:
        """Seconds of this reply's audio the room has heard (so far, or until it was stopped)."""
        if self._heard_at_stop is not None:
            return self._heard_at_stop
        return max(0.0, self._captured - self._output.source.queued_duration)

    async def write(self, index: int, text: str, tag: int, pcm: Pcm) -> None:
        """Play ``pcm`` (any rate), part of sentence number ``index`` (``text``); returns once queued."""
        if self.interrupted:
            return
        if not self._segments or self._segments[-1].index != index:
            if self._segments:
                self._segments[-1].complete = True
            self._segments.append(Segment(index, text, tag, start=self._captured))
        self._segments[-1].written += pcm.duration
        if self._resampler is None or self._resampler.input_rate != pcm.sample_rate:
            self._resampler = Resampler(pcm.sample_rate, self._output.sample_rate)
        await self._capture(self._framer.push(self._resampler.push(pcm)))

    async def finish(self) -> None:
        """Play out what is left and wait until the room has heard all of it."""
        if self.interrupted:
            return
        if self._resampler is not None:
            tail = self._resampler.flush()
            if len(tail):
                await self._capture(self._framer.push(tail))
        await self._capture(self._framer.flush(pad=True))
        if self._segments:
            self._segments[-1].complete = True
        await self._output.source.wait_for_playout()
        self._heard_at_stop = self._captured

    def interrupt(self) -> None:
        """Stop now: drop the queued audio; what was heard stays as ``played``."""
        if self.interrupted:
            return
        self._heard_at_stop = self.played
        self.interrupted = True
        self._output.source.clear_queue()

    async def _capture(self, frames: list[Pcm]) -> None:
        for frame in frames:
            if self.interrupted:
                return
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()
            await self._output.capture(frame.to_frame())
            self._captured += frame.duration
            if self._segments:
                segment = self._segments[-1]
                segment.duration = self._captured - segment.start

    def heard_text(self, tag: int | None = None) -> str:
        """The text of what was heard: whole sentences, and the words of a cut one in proportion."""
        played = self.played
        words: list[str] = []
        for segment in self._segments:
            if tag is not None and segment.tag != tag:
                continue
            if segment.start >= played:
                break
            sentence = segment.text.split()
            if segment.start + segment.duration <= played and (segment.complete or not self.interrupted):
                words.extend(sentence)
                continue
            length = max(segment.duration, segment.written)
            share = (played - segment.start) / length if length > 0 else 0.0
            words.extend(sentence[: int(len(sentence) * min(1.0, share))])
            break
        return " ".join(words)


def _consume_error(capture: asyncio.Future[None]) -> None:
    # a capture its caller stopped waiting for may still fail (the source closed): not worth a warning
    if not capture.cancelled():
        capture.exception()
