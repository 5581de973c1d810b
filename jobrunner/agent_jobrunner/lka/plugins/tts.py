"""espeak-ng as a livekit-agents ``tts.TTS``: each text is synthesized as it is read from espeak-ng."""

from __future__ import annotations

from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, tts
from livekit.agents.utils import shortuuid

from agent_jobrunner.voice.interfaces import ProviderError
from agent_jobrunner.voice.providers import espeak


class EspeakTTS(tts.TTS[Any]):
    """Needs the ``espeak-ng`` program (Debian package ``espeak-ng``)."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 150) -> None:
        self._engine = espeak.EspeakTTS(voice=voice, words_per_minute=words_per_minute)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=self._engine.sample_rate,
            num_channels=1,
        )

    @property
    def model(self) -> str:
        return f"espeak-ng-{self._engine.voice}"

    @property
    def provider(self) -> str:
        return "agent_jobrunner"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, engine=self._engine, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    def __init__(
        self, *, tts: EspeakTTS, engine: espeak.EspeakTTS, input_text: str, conn_options: APIConnectOptions
    ) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._engine = engine

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=shortuuid("espeak_"),
            sample_rate=self._engine.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        try:
            async for pcm in self._engine.synthesize(self._input_text):
                output_emitter.push(pcm.samples.astype("<i2").tobytes())
        except ProviderError as err:
            raise APIConnectionError(str(err), retryable=False) from err
        output_emitter.flush()
