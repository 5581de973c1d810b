"""The user's voice from the room: one remote participant's microphone, as 16 kHz audio.

Follows the participant: when their track goes (unpublished, they left) it waits for the
next one (theirs when one was chosen, else the first remote non-agent participant's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from livekit import rtc

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, ROOM_SAMPLE_RATE, Pcm, Resampler

logger = logging.getLogger(__name__)


class AudioInput:
    def __init__(
        self, room: rtc.Room, participant: str | None = None, sample_rate: int = MODEL_SAMPLE_RATE
    ) -> None:
        self.room = room
        self.wanted = participant
        self.sample_rate = sample_rate
        self.participant: str | None = None  # whom we are listening to now
        self._tracks: asyncio.Queue[tuple[rtc.RemoteAudioTrack, rtc.RemoteParticipant]] = asyncio.Queue()
        self._current: rtc.RemoteAudioTrack | None = None
        self._stream: rtc.AudioStream | None = None
        self._closing: set[asyncio.Future[None]] = set()
        room.on("track_subscribed", self._on_subscribed)
        room.on("track_published", self._on_published)
        room.on("track_unsubscribed", self._on_gone)
        room.on("participant_disconnected", self._on_left)
        for remote in list(room.remote_participants.values()):
            for publication in list(remote.track_publications.values()):
                self._on_published(publication, remote)
                if isinstance(publication.track, rtc.RemoteAudioTrack):
                    self._on_subscribed(publication.track, publication, remote)

    def _fits(self, participant: rtc.RemoteParticipant) -> bool:
        if self.wanted is not None:
            return participant.identity == self.wanted
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return False
        return self.participant is None or participant.identity == self.participant

    def _on_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        # the job may run without auto-subscribe: subscribe to the one track we need
        if (
            publication.kind == rtc.TrackKind.KIND_AUDIO
            and self._fits(participant)
            and not publication.subscribed
        ):
            publication.set_subscribed(True)

    def _on_subscribed(self, track: Any, publication: Any, participant: rtc.RemoteParticipant) -> None:
        if isinstance(track, rtc.RemoteAudioTrack) and self._fits(participant):
            self._tracks.put_nowait((track, participant))

    def _on_gone(self, track: Any, publication: Any, participant: rtc.RemoteParticipant) -> None:
        if track is self._current:
            self._close_stream()

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.participant:
            self._close_stream()
            if self.wanted is None:
                self.participant = None

    def _close_stream(self) -> None:
        stream, self._stream, self._current = self._stream, None, None
        if stream is not None:
            # from an event callback: the closing runs as a task, awaited by aclose()
            task = asyncio.ensure_future(stream.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def frames(self) -> AsyncGenerator[Pcm, None]:
        """Audio of the followed participant at ``sample_rate``, across track changes, forever."""
        while True:
            track, participant = await self._tracks.get()
            if track.sid is None or not self._fits(participant):
                continue
            self.participant = participant.identity
            self._current = track
            self._stream = stream = rtc.AudioStream(track, sample_rate=ROOM_SAMPLE_RATE, num_channels=1)
            resampler = Resampler(ROOM_SAMPLE_RATE, self.sample_rate)
            logger.info("listening to %s (track %s)", participant.identity, track.sid)
            try:
                async for event in stream:
                    pcm = resampler.push(Pcm.from_frame(event.frame))
                    if len(pcm):
                        yield pcm
            finally:
                if self._stream is stream:
                    self._stream = self._current = None
                with contextlib.suppress(Exception):
                    await stream.aclose()
            logger.info("stopped listening to %s", participant.identity)

    async def aclose(self) -> None:
        self.room.off("track_subscribed", self._on_subscribed)
        self.room.off("track_published", self._on_published)
        self.room.off("track_unsubscribed", self._on_gone)
        self.room.off("participant_disconnected", self._on_left)
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)
