"""Offline livekit-agents plugins: an ``AgentSession`` that needs no cloud keys and no network.

Our offline providers (``agent_jobrunner.voice.providers``) as livekit-agents classes::

    from livekit.plugins import silero
    from agent_jobrunner.lka.plugins import EspeakTTS, PocketSphinxSTT, RulesLLM

    session = AgentSession(vad=silero.VAD.load(), stt=PocketSphinxSTT(), llm=RulesLLM(), tts=EspeakTTS())

``PocketSphinxSTT`` is a batch ``stt.STT`` (the session wraps it with the VAD, as for any
non-streaming STT), ``EspeakTTS`` a chunked ``tts.TTS`` (needs the ``espeak-ng`` program),
``RulesLLM`` an ``llm.LLM`` that answers a few phrases and calls tools by name exactly as a
chat model does (``get_weather`` for "what is the weather in paris"). Silero VAD is
livekit-agents' own plugin, ``livekit-plugins-silero``, whose wheel ships its model.
"""

from agent_jobrunner.lka.plugins.llm import RulesLLM
from agent_jobrunner.lka.plugins.stt import PocketSphinxSTT
from agent_jobrunner.lka.plugins.tts import EspeakTTS

__all__ = ["EspeakTTS", "PocketSphinxSTT", "RulesLLM"]
