"""Spoken test audio made at test time (espeak-ng), and transcription of what the agent said."""

from __future__ import annotations

from collections.abc import Sequence

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, ROOM_SAMPLE_RATE, Pcm, Resampler
from agent_jobrunner.voice.providers.espeak import EspeakTTS
from agent_jobrunner.voice.providers.pocketsphinx import PocketSphinxSTT
from agent_jobrunner.voice.providers.rules import STORY
from agent_jobrunner.voice.sentences import split_sentences
from devenv.caller import LOUD_RMS

# what the agent may answer, for the caller's recognizer: the right answer has to win against
# the others on the sound alone
ANSWERS = (
    "the weather in paris is sunny and warm",
    "the weather in london is cloudy and cool",
    "the weather in paris is mild",
    "hello i am a voice agent running in a job pod",
    "my name is pocket agent",
    "okay i will stop",
    "sorry i did not understand that",
    "goodbye have a nice day",
    *split_sentences(STORY),
)


def resample(pcm: Pcm, rate: int) -> Pcm:
    resampler = Resampler(pcm.sample_rate, rate)
    return Pcm.concat([resampler.push(pcm), resampler.flush()], rate)


async def speak(text: str, words_per_minute: int = 140) -> Pcm:
    """``text`` spoken by espeak-ng, at the room's rate."""
    tts = EspeakTTS(words_per_minute=words_per_minute)
    chunks = [chunk async for chunk in tts.synthesize(text)]
    return resample(Pcm.concat(chunks, tts.sample_rate), ROOM_SAMPLE_RATE)


async def transcribe(pcm: Pcm, phrases: Sequence[str] = ANSWERS) -> str:
    """What the offline STT hears in ``pcm`` (any rate)."""
    stt = await PocketSphinxSTT.load(phrases)
    try:
        return (await stt.recognize(resample(pcm, MODEL_SAMPLE_RATE))).text
    finally:
        await stt.aclose()


def trailing_silence(pcm: Pcm, loud_rms: float = LOUD_RMS) -> float:
    """Seconds after the last loud 10 ms of ``pcm`` (espeak-ng ends its speech with some silence)."""
    frame = pcm.sample_rate // 100
    starts = range(0, len(pcm) - frame + 1, frame)
    loud = [i for i in starts if Pcm(pcm.samples[i : i + frame], pcm.sample_rate).rms() >= loud_rms]
    return (len(pcm) - (loud[-1] + frame)) / pcm.sample_rate if loud else 0.0
