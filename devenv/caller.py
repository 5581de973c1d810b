"""A person in the room: talks into a microphone track and listens to the agent's track."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
from livekit import rtc

from agent_jobrunner.voice.audio import ROOM_SAMPLE_RATE, Pcm
from devenv.livekit import LiveKitAccess, room_token

FRAME = ROOM_SAMPLE_RATE // 100  # 10 ms
# the agent is speaking in a 10 ms frame this loud (espeak speech is ~2000-6000 RMS; silence ~0)
LOUD_RMS = 400.0


class Caller:
    def __init__(self, identity: str = "caller") -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(ROOM_SAMPLE_RATE, 1, queue_size_ms=100)
        # what came from the agent: (arrival time, 10 ms of audio), in order
        self.heard: list[tuple[float, Pcm]] = []
        self._utterances: asyncio.Queue[tuple[Pcm, asyncio.Future[tuple[float, float]]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._agent_track = asyncio.Event()

    async def join(self, livekit: LiveKitAccess, room: str) -> None:
        @self.room.on("track_subscribed")
        def _subscribed(track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
            if isinstance(track, rtc.RemoteAudioTrack) and who.identity.startswith("agent-"):
                self._tasks.append(asyncio.create_task(self._listen(track)))

        await self.room.connect(livekit.url, room_token(livekit, room, self.identity))
        mic = rtc.LocalAudioTrack.create_audio_track("caller-mic", self.source)
        await self.room.local_participant.publish_track(
            mic, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._tasks.append(asyncio.create_task(self._microphone()))

    async def wait_agent_track(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._agent_track.wait(), timeout)

    # ------------------------------------------------------------------------------ talking

    def say_soon(self, pcm: Pcm) -> asyncio.Future[tuple[float, float]]:
        """Queue ``pcm`` (48 kHz) on the microphone; resolves to (first, last) frame times."""
        done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._utterances.put_nowait((pcm, done))
        return done

    async def say(self, pcm: Pcm) -> tuple[float, float]:
        return await self.say_soon(pcm)

    async def _microphone(self) -> None:
        """Always sending, like a real microphone: silence between utterances."""
        silence = np.zeros(FRAME, dtype=np.int16)
        clock = time.monotonic()
        current: tuple[Pcm, asyncio.Future[tuple[float, float]]] | None = None
        offset = 0
        started = 0.0
        while True:
            if current is None and not self._utterances.empty():
                current, offset, started = self._utterances.get_nowait(), 0, time.monotonic()
            if current is None:
                samples = silence
            else:
                pcm, done = current
                samples = pcm.samples[offset : offset + FRAME]
                offset += FRAME
                if len(samples) < FRAME:
                    samples = np.concatenate([samples, silence[: FRAME - len(samples)]])
                if offset >= len(pcm.samples):
                    if not done.done():
                        done.set_result((started, time.monotonic()))
                    current = None
            await self.source.capture_frame(Pcm(samples, ROOM_SAMPLE_RATE).to_frame())
            # keep to real time even if the source queue lets frames through faster
            clock += FRAME / ROOM_SAMPLE_RATE
            ahead = clock - time.monotonic()
            if ahead > 0.03:
                await asyncio.sleep(ahead - 0.02)
            elif ahead < -0.5:
                clock = time.monotonic()

    # ------------------------------------------------------------------------------ listening

    async def _listen(self, track: rtc.RemoteAudioTrack) -> None:
        self._agent_track.set()
        stream = rtc.AudioStream(track, sample_rate=ROOM_SAMPLE_RATE, num_channels=1, frame_size_ms=10)
        try:
            async for event in stream:
                self.heard.append((time.monotonic(), Pcm.from_frame(event.frame)))
        finally:
            await stream.aclose()

    def loud_times(self, after: float) -> list[float]:
        return [t for t, frame in self.heard if t >= after and frame.rms() >= LOUD_RMS]

    async def agent_starts(self, after: float, timeout: float = 60.0) -> float:
        """When the agent's audio got loud after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loud = self.loud_times(after)
            if loud:
                return loud[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"the agent said nothing within {timeout}s")

    async def agent_stops(self, after: float, quiet: float = 1.2, timeout: float = 90.0) -> float:
        """The last loud moment before ``quiet`` seconds of silence (the agent spoke after ``after``)."""
        start = await self.agent_starts(after, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loud = self.loud_times(start)
            for earlier, later in zip(loud, [*loud[1:], None], strict=True):
                gap_end = later if later is not None else time.monotonic()
                if gap_end - earlier >= quiet:
                    return earlier
            await asyncio.sleep(0.05)
        raise AssertionError(f"the agent did not stop speaking within {timeout}s")

    def audio(self, start: float, end: float) -> Pcm:
        """What was heard from the agent between two times (arrival times)."""
        frames = [frame for t, frame in self.heard if start <= t <= end]
        return Pcm.concat(frames, ROOM_SAMPLE_RATE)

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
        await self.source.aclose()
