"""PocketSphinx as a livekit-agents ``stt.STT``: batch recognition of each utterance, offline."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, shortuuid

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm, Resampler
from agent_jobrunner.voice.interfaces import ProviderError
from agent_jobrunner.voice.providers import pocketsphinx
from agent_jobrunner.voice.providers.rules import RuleBasedLLM


def to_model_rate(buffer: AudioBuffer) -> Pcm:
    """The frames of ``buffer`` as one mono piece at the recognizer's 16 kHz."""
    frames = buffer if isinstance(buffer, list) else [buffer]
    if not frames:
        return Pcm.empty(MODEL_SAMPLE_RATE)
    rate = frames[0].sample_rate
    pcm = Pcm.concat([Pcm.from_frame(frame) for frame in frames], rate)
    resampler = Resampler(rate, MODEL_SAMPLE_RATE)
    return Pcm.concat([resampler.push(pcm), resampler.flush()], MODEL_SAMPLE_RATE)


class PocketSphinxSTT(stt.STT[Any]):
    """``phrases``: what users are expected to say (default: what ``RulesLLM`` understands); a
    small language model is built from them, which recognizes them far better than open English.
    The recognizer runs in a worker process of its own, started on first use (or ``prewarm()``)."""

    def __init__(self, phrases: Sequence[str] | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._phrases = list(phrases) if phrases is not None else RuleBasedLLM().phrases()
        self._engine: pocketsphinx.PocketSphinxSTT | None = None
        self._loading: asyncio.Task[pocketsphinx.PocketSphinxSTT] | None = None

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "agent_jobrunner"

    def prewarm(self) -> None:
        """Start the recognizer now, so the first utterance does not wait for it."""
        self._load()

    def _load(self) -> asyncio.Task[pocketsphinx.PocketSphinxSTT]:
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(
                pocketsphinx.PocketSphinxSTT.load(self._phrases), name="pocketsphinx-load"
            )
        return self._loading

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        try:
            engine = self._engine = await asyncio.shield(self._load())
            transcript = await engine.recognize(to_model_rate(buffer))
        except ProviderError as err:
            raise APIConnectionError(f"PocketSphinx: {err}", retryable=False) from err
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=shortuuid("sphinx_"),
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=transcript.text)],
        )

    async def aclose(self) -> None:
        loading, self._loading = self._loading, None
        if loading is None:
            return
        if not loading.done():
            loading.cancel()
        results = await asyncio.gather(loading, return_exceptions=True)
        engine = results[0]
        if isinstance(engine, pocketsphinx.PocketSphinxSTT):
            await engine.aclose()
