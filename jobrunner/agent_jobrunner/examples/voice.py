"""A voice agent that runs fully offline: ``AGENT_ENTRYPOINT=agent_jobrunner.examples.voice:entrypoint``.

Silero VAD, PocketSphinx STT (tuned to the phrases the agent knows), a rule-based "LLM" that
answers a few questions and calls ``get_weather``, and espeak-ng for its voice. Every pipeline
event is logged (and so reaches the operator with the job's logs).

Environment (all optional):
  VOICE_LLM_BASE_URL   use an OpenAI-compatible chat completions API at this URL (…/v1) instead
  VOICE_LLM_MODEL      its model (default gpt-4o-mini); the key comes from OPENAI_API_KEY
  VOICE_PARTICIPANT    the identity to listen to (default: the first remote participant)
  VOICE_GREETING       something to say on joining
  VOICE_MIN_SILENCE    seconds of silence that end a user turn (default 0.5)
  VOICE_TTS_WPM        speaking rate of the agent (default 150 words per minute)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Annotated, Any

from agent_jobrunner.job import JobContext
from agent_jobrunner.voice import (
    LLM,
    MessageAdded,
    TurnCompleted,
    VoiceEvent,
    VoicePipeline,
    function_tool,
)
from agent_jobrunner.voice.providers.espeak import EspeakTTS
from agent_jobrunner.voice.providers.openai import OpenAILLM
from agent_jobrunner.voice.providers.pocketsphinx import PocketSphinxSTT
from agent_jobrunner.voice.providers.rules import RuleBasedLLM
from agent_jobrunner.voice.providers.silero import SileroOptions, SileroVAD

logger = logging.getLogger("agent_jobrunner.examples.voice")

INSTRUCTIONS = "You are a friendly voice agent. Answer in one or two short sentences."
WEATHER = {"paris": "sunny and warm", "london": "cloudy and cool"}


@function_tool
async def get_weather(city: Annotated[str, "the city, in lower case"]) -> str:
    """The current weather in a city."""
    return WEATHER.get(city.lower(), "mild")


# attributes of a log record, which extras must not overwrite
_RESERVED = {*logging.makeLogRecord({}).__dict__, "message", "asctime"}


def event_fields(event: VoiceEvent) -> dict[str, str]:
    """An event as flat log extras (a field named like a log record attribute gets a ``voice_`` prefix)."""
    return {f"voice_{k}" if k in _RESERVED else k: v for k, v in _fields(event).items()}


def _fields(event: VoiceEvent) -> dict[str, str]:
    if isinstance(event, MessageAdded):
        message = event.message
        return {"role": message.role, "content": message.content, "interrupted": str(message.interrupted)}
    if isinstance(event, TurnCompleted):
        return event.metrics.as_log_extra()
    return {key: str(value) for key, value in dataclasses.asdict(event).items()}


def log_event(event: VoiceEvent) -> None:
    logger.info(
        "voice event %s", type(event).__name__, extra={"event": type(event).__name__, **event_fields(event)}
    )


async def prewarm(userdata: dict[str, Any]) -> None:
    """Once per pod, before it reports idle: the models, so a warm pod's call starts listening
    at once (loading PocketSphinx takes seconds)."""
    silence = float(os.environ.get("VOICE_MIN_SILENCE", "0.5"))
    userdata["vad"], userdata["stt"] = await asyncio.gather(
        SileroVAD.load(SileroOptions(min_silence_duration=silence)),
        PocketSphinxSTT.load(RuleBasedLLM().phrases()),
    )


async def entrypoint(ctx: JobContext) -> None:
    rules = RuleBasedLLM()
    llm: LLM = rules
    base_url = os.environ.get("VOICE_LLM_BASE_URL", "")
    if base_url:
        llm = OpenAILLM(os.environ.get("VOICE_LLM_MODEL", "gpt-4o-mini"), base_url=base_url)
    vad: SileroVAD = ctx.userdata["vad"]
    stt: PocketSphinxSTT = ctx.userdata["stt"]
    tts = EspeakTTS(words_per_minute=int(os.environ.get("VOICE_TTS_WPM", "150")))
    pipeline = VoicePipeline(
        vad=vad, stt=stt, llm=llm, tts=tts, tools=[get_weather], instructions=INSTRUCTIONS
    )
    pipeline.events.on_any(log_event)
    try:
        await pipeline.start(ctx.room, os.environ.get("VOICE_PARTICIPANT") or None)
        logger.info("voice agent ready", extra={"llm": type(llm).__name__})
        greeting = os.environ.get("VOICE_GREETING", "")
        if greeting:
            await pipeline.say(greeting)
        await asyncio.Event().wait()  # until the job ends (the runner cancels the entrypoint)
    finally:
        await pipeline.aclose()
        await stt.aclose()
        if isinstance(llm, OpenAILLM):
            await llm.aclose()
