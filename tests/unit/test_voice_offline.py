"""The offline reference providers on real speech made here: espeak-ng, Silero VAD, PocketSphinx, rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from agent_jobrunner.voice import ChatContext, ChatMessage, TextDelta, ToolCall, VADEventType, function_tool
from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm, Resampler
from agent_jobrunner.voice.interfaces import ProviderError, StreamingSTT
from agent_jobrunner.voice.providers.espeak import EspeakTTS
from agent_jobrunner.voice.providers.pocketsphinx import PocketSphinxSTT, build_language_model
from agent_jobrunner.voice.providers.rules import STORY, RuleBasedLLM
from agent_jobrunner.voice.providers.silero import VENDORED_MODEL, SileroOptions, SileroVAD, find_model

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

# silero_vad/data/silero_vad.onnx of the silero-vad 6.2.3 wheel
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
PHRASES = RuleBasedLLM().phrases()


async def spoken(text: str, words_per_minute: int = 140) -> Pcm:
    tts = EspeakTTS(words_per_minute=words_per_minute)
    pcm = Pcm.concat([c async for c in tts.synthesize(text)], tts.sample_rate)
    resampler = Resampler(tts.sample_rate, MODEL_SAMPLE_RATE)
    return Pcm.concat([resampler.push(pcm), resampler.flush()], MODEL_SAMPLE_RATE)


def padded(speech: Pcm, before: float = 1.0, after: float = 1.0) -> Pcm:
    return Pcm.concat(
        [Pcm.silence(before, MODEL_SAMPLE_RATE), speech, Pcm.silence(after, MODEL_SAMPLE_RATE)],
        MODEL_SAMPLE_RATE,
    )


# ------------------------------------------------------------------------------------ TTS


async def test_espeak_streams_speech() -> None:
    tts = EspeakTTS(words_per_minute=150)
    chunks = [c async for c in tts.synthesize("The weather in Paris is sunny and warm.")]
    assert len(chunks) > 2  # streamed as espeak-ng writes it
    speech = Pcm.concat(chunks, tts.sample_rate)
    assert speech.sample_rate == 22_050
    assert 1.5 < speech.duration < 4.5
    assert speech.rms() > 500  # sound, not silence
    longer = Pcm.concat([c async for c in tts.synthesize(STORY[:300])], tts.sample_rate)
    assert longer.duration > 2 * speech.duration


async def test_espeak_nothing_to_say_and_failures() -> None:
    tts = EspeakTTS()
    assert [c async for c in tts.synthesize("   ")] == []
    broken = EspeakTTS(binary="false")  # a program that fails at once, writing nothing
    with pytest.raises(ProviderError, match="exited with 1"):
        _ = [c async for c in broken.synthesize("hello")]
    with pytest.raises(ProviderError, match="not installed"):
        EspeakTTS(binary="no-such-espeak")


async def test_espeak_stopped_midway_leaves_no_process() -> None:
    tts = EspeakTTS()
    stream = tts.synthesize(STORY)
    first = await anext(stream)
    assert len(first)
    await stream.aclose()  # as an interruption does
    await asyncio.sleep(0.1)
    children = await asyncio.create_subprocess_exec(
        "pgrep", "-P", str(__import__("os").getpid()), "espeak-ng"
    )
    assert await children.wait() == 1  # no espeak-ng child left


# ------------------------------------------------------------------------------------ VAD


def test_vendored_model_is_the_silero_wheel_file() -> None:
    assert hashlib.sha256(VENDORED_MODEL.read_bytes()).hexdigest() == SILERO_SHA256
    assert find_model().is_file()


async def run_vad(
    vad: SileroVAD, audio: Pcm, piece: int = 160
) -> list[tuple[VADEventType, float, float | None]]:
    stream = vad.stream()
    events = []
    for start in range(0, len(audio), piece):
        for event in await stream.push(Pcm(audio.samples[start : start + piece], MODEL_SAMPLE_RATE)):
            events.append((event.type, event.speech_start, event.speech_end))
            assert event.speech is not None
            assert event.speech.sample_rate == MODEL_SAMPLE_RATE
    await stream.aclose()
    return events


async def test_vad_finds_speech_where_it_is() -> None:
    vad = await SileroVAD.load()
    speech = await spoken("What is the weather in Paris?")
    events = await run_vad(vad, padded(speech, before=1.0, after=1.5))
    assert [e[0] for e in events] == [VADEventType.START_OF_SPEECH, VADEventType.END_OF_SPEECH]
    (_, start, _), (_, _, end) = events
    assert start == pytest.approx(1.0, abs=0.15)
    assert end is not None
    assert 1.0 + speech.duration - 0.6 < end <= 1.0 + speech.duration + 0.1  # espeak adds trailing silence


async def test_vad_ignores_silence_and_tone() -> None:
    import numpy as np

    vad = await SileroVAD.load()
    t = np.arange(3 * MODEL_SAMPLE_RATE) / MODEL_SAMPLE_RATE
    hum = Pcm((np.sin(2 * np.pi * 50 * t) * 300).astype(np.int16), MODEL_SAMPLE_RATE)
    assert await run_vad(vad, Pcm.silence(3.0, MODEL_SAMPLE_RATE)) == []
    assert await run_vad(vad, hum) == []


async def test_vad_separates_two_utterances_by_the_silence_setting() -> None:
    one, two = await spoken("Hello there."), await spoken("What is your name?")
    audio = padded(Pcm.concat([one, Pcm.silence(0.8, MODEL_SAMPLE_RATE), two], MODEL_SAMPLE_RATE))
    quick = await SileroVAD.load(SileroOptions(min_silence_duration=0.4))
    patient = await SileroVAD.load(SileroOptions(min_silence_duration=1.5))
    audio = Pcm.concat([audio, Pcm.silence(1.0, MODEL_SAMPLE_RATE)], MODEL_SAMPLE_RATE)
    assert [e[0] for e in await run_vad(quick, audio)].count(VADEventType.END_OF_SPEECH) == 2
    assert [e[0] for e in await run_vad(patient, audio)].count(VADEventType.END_OF_SPEECH) == 1


async def test_vad_rejects_the_wrong_rate() -> None:
    stream = (await SileroVAD.load()).stream()
    with pytest.raises(ValueError, match="16000"):
        await stream.push(Pcm.silence(0.1, 48_000))


# ------------------------------------------------------------------------------------ STT


@pytest.fixture(scope="module")
def stt() -> PocketSphinxSTT:
    return asyncio.run(PocketSphinxSTT.load(PHRASES))


@pytest.mark.parametrize(
    "text",
    [
        "what is the weather in paris",
        "please tell me a long story",
        "hello who are you",
        "what is the weather in london",
    ],
)
async def test_pocketsphinx_recognizes_the_agent_phrases(text: str) -> None:
    stt = await PocketSphinxSTT.load(PHRASES)
    try:
        transcript = await stt.recognize(padded(await spoken(text), 0.3, 0.3))
    finally:
        await stt.aclose()
    assert transcript.text == text


async def test_streaming_matches_batch_and_leaves_little_for_the_end() -> None:
    stt = await PocketSphinxSTT.load(PHRASES)
    assert isinstance(stt, StreamingSTT)
    audio = padded(await spoken("what is the weather in paris"), 0.3, 0.3)
    try:
        stream = stt.stream()
        for start in range(0, len(audio), 1600):
            await stream.push(Pcm(audio.samples[start : start + 1600], MODEL_SAMPLE_RATE))
        t0 = time.monotonic()
        streamed = await stream.finish()
        finish_time = time.monotonic() - t0
        await stream.aclose()
        t0 = time.monotonic()
        batch = await stt.recognize(audio)
        batch_time = time.monotonic() - t0
    finally:
        await stt.aclose()
    assert streamed.text == batch.text == "what is the weather in paris"
    assert finish_time < batch_time


async def test_recognition_does_not_block_the_event_loop() -> None:
    stt = await PocketSphinxSTT.load()  # the large general model: slow on purpose
    audio = padded(await spoken("the quick brown fox jumps over the lazy dog"), 0.2, 0.2)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        t0 = time.monotonic()
        await stt.recognize(audio)
        elapsed = time.monotonic() - t0
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        await stt.aclose()
    assert elapsed > 0.1
    assert ticks >= elapsed / 0.01 * 0.5  # the loop kept running while the decoder worked


def test_language_model_leaves_out_unknown_words() -> None:
    arpa = build_language_model(["hello zzqxv world"], lambda w: w != "zzqxv")
    assert "\\1-grams:" in arpa
    assert " hello world " in arpa  # the bigram, with the unknown word between them dropped
    assert "zzqxv" not in arpa
    with pytest.raises(ProviderError, match="none of the phrases"):
        build_language_model(["zzqxv"], lambda w: False)


# ------------------------------------------------------------------------------------ LLM


@function_tool
async def get_weather(city: str) -> str:
    """Weather."""
    return "rainy"


async def chat(llm: RuleBasedLLM, context: ChatContext) -> list[TextDelta | ToolCall]:
    return [c async for c in llm.chat(context, [get_weather])]


async def test_rules_answer_stream_and_call_a_function() -> None:
    llm = RuleBasedLLM()
    context = ChatContext([ChatMessage("user", "what is the weather in paris")])
    (call,) = await chat(llm, context)
    assert isinstance(call, ToolCall)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "paris"})
    context.append(ChatMessage("assistant", "", tool_calls=(call,)))
    context.append(ChatMessage("tool", await get_weather.invoke(call.arguments), tool_call_id=call.id))
    answer = await chat(llm, context)
    assert len(answer) > 3
    assert "".join(c.text for c in answer if isinstance(c, TextDelta)) == "The weather in paris is rainy."

    unknown = await chat(llm, ChatContext([ChatMessage("user", "banana")]))
    assert "".join(c.text for c in unknown if isinstance(c, TextDelta)) == "Sorry, I did not understand that."
    story = await chat(llm, ChatContext([ChatMessage("user", "tell me a long story")]))
    assert "".join(c.text for c in story if isinstance(c, TextDelta)) == STORY


async def test_vad_inference_does_not_block_the_event_loop() -> None:
    import numpy as np

    stream = (await SileroVAD.load()).stream()
    noise = Pcm(
        np.random.default_rng(1).normal(0, 3000, 120 * MODEL_SAMPLE_RATE).astype(np.int16), MODEL_SAMPLE_RATE
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        t0 = time.monotonic()
        await stream.push(noise)  # two minutes at once: 3750 inferences
        elapsed = time.monotonic() - t0
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    assert elapsed > 0.1
    assert ticks >= elapsed / 0.005 * 0.4
