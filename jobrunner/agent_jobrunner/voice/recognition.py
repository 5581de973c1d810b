"""One user utterance on its way to text.

With a streaming STT the audio is fed while the user speaks (by a task of its own, so the
listener never waits on the recognizer), leaving only the end of the utterance to decode
when they stop; with a batch STT the whole utterance is recognized then.
"""

from __future__ import annotations

import asyncio

from agent_jobrunner.voice.audio import Pcm
from agent_jobrunner.voice.interfaces import STT, StreamingSTT, STTStream, Transcript


class Recognition:
    def __init__(self, stt: STT) -> None:
        self._stt = stt
        self._stream: STTStream | None = None
        self._queue: asyncio.Queue[Pcm | None] = asyncio.Queue()
        self._feeder: asyncio.Task[None] | None = None
        if isinstance(stt, StreamingSTT):
            self._stream = stt.stream()
            self._feeder = asyncio.create_task(self._feed(self._stream), name="voice-stt-feed")

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def push(self, pcm: Pcm) -> None:
        """Audio of the utterance as it comes (ignored by a batch STT, which gets it at the end)."""
        if self._stream is not None and len(pcm):
            self._queue.put_nowait(pcm)

    async def _feed(self, stream: STTStream) -> None:
        while (pcm := await self._queue.get()) is not None:
            await stream.push(pcm)

    async def finish(self, speech: Pcm) -> Transcript:
        """The transcript of the utterance (``speech`` is the whole of it, for a batch STT)."""
        if self._stream is None or self._feeder is None:
            return await self._stt.recognize(speech)
        self._queue.put_nowait(None)
        try:
            await self._feeder
            return await self._stream.finish()
        finally:
            await self._stream.aclose()

    async def aclose(self) -> None:
        """Drop the utterance (the pipeline is stopping)."""
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
        if self._stream is not None:
            await self._stream.aclose()
