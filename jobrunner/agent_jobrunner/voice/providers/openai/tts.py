"""Speech (``POST /audio/speech``), streamed as raw PCM (24 kHz, 16-bit, mono) or WAV."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp

from agent_jobrunner.voice import wav
from agent_jobrunner.voice.audio import Pcm, resample_stream
from agent_jobrunner.voice.interfaces import ProviderError
from agent_jobrunner.voice.providers.openai.http import (
    APIConnectionError,
    OpenAIClient,
    Timeouts,
    raise_for_status,
)

# what OpenAI's "pcm" response format is
PCM_SAMPLE_RATE = 24_000
READ_BYTES = 4800


class OpenAITTS:
    sample_rate = PCM_SAMPLE_RATE

    def __init__(
        self,
        model: str = "tts-1",
        voice: str = "alloy",
        *,
        response_format: Literal["pcm", "wav"] = "pcm",
        speed: float | None = None,
        client: OpenAIClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.model = model
        self.voice = voice
        self.response_format = response_format
        self.speed = speed
        self.client = client or OpenAIClient(base_url, api_key, timeouts)

    def request_body(self, text: str) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": self.response_format,
        }
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    async def synthesize(self, text: str) -> AsyncIterator[Pcm]:
        if not text.strip():
            return
        try:
            async with self.client.session().post(
                self.client.url("audio/speech"), json=self.request_body(text), headers=self.client.headers()
            ) as response:
                await raise_for_status(response)
                async for pcm in self._read(response.content):
                    yield pcm
        except (aiohttp.ClientError, TimeoutError) as err:
            raise APIConnectionError(f"speech failed: {type(err).__name__}: {err}") from err

    async def _read(self, body: aiohttp.StreamReader) -> AsyncIterator[Pcm]:
        rate = PCM_SAMPLE_RATE
        head = b""
        if self.response_format == "wav":
            header: wav.WavHeader | None = None
            while header is None:
                chunk = await body.read(READ_BYTES)
                if not chunk:
                    raise ProviderError("the speech response ended inside its WAV header")
                head += chunk
                header = wav.parse_header(head)
            if header.channels != 1:
                raise ProviderError(f"the speech response has {header.channels} channels; expected mono")
            rate, head = header.sample_rate, head[header.data_offset :]
        async for pcm in resample_stream(
            head, functools.partial(body.read, READ_BYTES), rate, self.sample_rate
        ):
            yield pcm

    async def aclose(self) -> None:
        await self.client.aclose()
