"""Transcription (``POST /audio/transcriptions``, multipart): one utterance as a WAV file."""

from __future__ import annotations

import aiohttp

from agent_jobrunner.voice import wav
from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm
from agent_jobrunner.voice.interfaces import ProviderError, Transcript
from agent_jobrunner.voice.providers.openai.http import (
    APIConnectionError,
    OpenAIClient,
    Timeouts,
    raise_for_status,
)


class OpenAISTT:
    sample_rate = MODEL_SAMPLE_RATE

    def __init__(
        self,
        model: str = "whisper-1",
        *,
        language: str = "",
        prompt: str = "",
        client: OpenAIClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.model = model
        self.language = language
        self.prompt = prompt
        self.client = client or OpenAIClient(base_url, api_key, timeouts)

    def form(self, audio: Pcm) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("file", wav.encode(audio), filename="speech.wav", content_type="audio/wav")
        form.add_field("model", self.model)
        form.add_field("response_format", "json")
        if self.language:
            form.add_field("language", self.language)
        if self.prompt:
            form.add_field("prompt", self.prompt)
        return form

    async def recognize(self, audio: Pcm) -> Transcript:
        try:
            async with self.client.session().post(
                self.client.url("audio/transcriptions"), data=self.form(audio), headers=self.client.headers()
            ) as response:
                await raise_for_status(response)
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise APIConnectionError(f"transcription failed: {type(err).__name__}: {err}") from err
        except ValueError as err:
            raise ProviderError(f"the transcription is not JSON: {err}") from err
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ProviderError(f"the transcription has no text: {str(body)[:200]}")
        return Transcript(text=body["text"], language=str(body.get("language") or self.language))

    async def aclose(self) -> None:
        await self.client.aclose()
