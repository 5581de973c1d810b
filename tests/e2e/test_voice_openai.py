"""The OpenAI-compatible providers against a local server speaking the API's wire format."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import numpy as np
import pytest

from agent_jobrunner.voice import ChatContext, ChatMessage, TextDelta, ToolCall, function_tool
from agent_jobrunner.voice.audio import Pcm
from agent_jobrunner.voice.providers.openai import (
    APIConnectionError,
    APIStatusError,
    OpenAILLM,
    OpenAISTT,
    OpenAITTS,
    Timeouts,
)
from tests.voicekit.fake_openai import FakeOpenAI, tone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@function_tool
async def get_weather(city: Annotated[str, "the city"]) -> str:
    """The current weather in a city."""
    return "sunny"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


def question(text: str) -> ChatContext:
    return ChatContext([ChatMessage("system", "be brief"), ChatMessage("user", text)])


async def collect(llm: OpenAILLM, context: ChatContext) -> list[TextDelta | ToolCall]:
    return [chunk async for chunk in llm.chat(context, [get_weather])]


async def test_streamed_text_and_request_format(server: FakeOpenAI) -> None:
    llm = OpenAILLM("gpt-test", base_url=server.base_url, api_key="sk-test", temperature=0.2)
    try:
        chunks = await collect(llm, question("hello"))
    finally:
        await llm.aclose()
    assert all(isinstance(c, TextDelta) for c in chunks)
    assert len(chunks) > 3  # it really streamed, word by word
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == (
        "Hello, I am a voice agent running in a job pod."
    )
    (request,) = server.chats()
    assert request.headers["Authorization"] == "Bearer sk-test"
    body = request.body
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "the city"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ]


async def test_tool_call_assembled_from_pieces_and_result_sent_back(server: FakeOpenAI) -> None:
    llm = OpenAILLM("gpt-test", base_url=server.base_url)
    context = question("what is the weather in paris")
    try:
        chunks = await collect(llm, context)
        assert chunks == [ToolCall(id="call_fake_1", name="get_weather", arguments='{"city": "paris"}')]
        call = chunks[0]
        assert isinstance(call, ToolCall)
        result = await get_weather.invoke(call.arguments)
        context.append(ChatMessage("assistant", "", tool_calls=(call,)))
        context.append(ChatMessage("tool", result, tool_call_id=call.id, name=call.name))
        answer = await collect(llm, context)
    finally:
        await llm.aclose()
    assert "".join(c.text for c in answer if isinstance(c, TextDelta)) == "The weather in Paris is sunny."
    sent = server.chats()[1].body["messages"]
    assert sent[-2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_fake_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "paris"}'},
            }
        ],
    }
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny"}


async def test_http_500_is_a_status_error(server: FakeOpenAI) -> None:
    server.chat_script = ["500"]
    llm = OpenAILLM("gpt-test", base_url=server.base_url)
    try:
        with pytest.raises(APIStatusError) as failure:
            await collect(llm, question("hello"))
        assert failure.value.status == 500
        assert "The server had an error" in str(failure.value)
        # the same client goes on working after the failure
        assert await collect(llm, question("hello"))
    finally:
        await llm.aclose()


async def test_broken_stream_is_a_connection_error(server: FakeOpenAI) -> None:
    server.chat_script = ["broken"]
    llm = OpenAILLM("gpt-test", base_url=server.base_url)
    received: list[TextDelta | ToolCall] = []

    async def consume() -> None:
        async for chunk in llm.chat(question("hello"), []):
            received.append(chunk)

    try:
        with pytest.raises(APIConnectionError):
            await consume()
    finally:
        await llm.aclose()
    assert received == [TextDelta("The weather")]  # what came before the cut was delivered


async def test_refused_connection_is_a_connection_error(server: FakeOpenAI) -> None:
    base_url = server.base_url
    await server.stop()
    llm = OpenAILLM("gpt-test", base_url=base_url)
    try:
        with pytest.raises(APIConnectionError):
            await collect(llm, question("hello"))
    finally:
        await llm.aclose()


async def test_transcription_uploads_a_wav(server: FakeOpenAI) -> None:
    server.transcript = "what is the weather in paris"
    stt = OpenAISTT("whisper-test", language="en", base_url=server.base_url, api_key="sk-test")
    try:
        transcript = await stt.recognize(tone(1.5, 16_000))
    finally:
        await stt.aclose()
    assert transcript.text == "what is the weather in paris"
    (request,) = server.requests
    assert request.path == "/v1/audio/transcriptions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    fields = request.body
    assert fields["model"] == "whisper-test"
    assert fields["language"] == "en"
    assert fields["response_format"] == "json"
    assert fields["file"]["filename"] == "speech.wav"
    assert fields["file"]["sample_rate"] == 16_000
    assert fields["file"]["duration"] == pytest.approx(1.5)


async def test_transcription_error_status(server: FakeOpenAI) -> None:
    stt = OpenAISTT(base_url=server.base_url.replace("/v1", "/nowhere"))
    try:
        with pytest.raises(APIStatusError) as failure:
            await stt.recognize(tone(0.5, 16_000))
    finally:
        await stt.aclose()
    assert failure.value.status == 404


def dominant_hz(pcm: Pcm) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm.samples), 1 / pcm.sample_rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("response_format", ["pcm", "wav"])
async def test_speech_streams_audio(server: FakeOpenAI, response_format: str) -> None:
    server.speech = tone(1.0, 24_000, hz=300.0)
    tts = OpenAITTS("tts-test", "nova", response_format=response_format, base_url=server.base_url)  # type: ignore[arg-type]
    try:
        chunks = [chunk async for chunk in tts.synthesize("Hello there.")]
    finally:
        await tts.aclose()
    assert len(chunks) > 3  # streamed in pieces, not one blob
    audio = Pcm.concat(chunks, tts.sample_rate)
    assert audio.sample_rate == 24_000
    assert audio.duration == pytest.approx(1.0, abs=0.01)
    assert dominant_hz(audio) == pytest.approx(300.0, abs=2.0)
    (request,) = server.requests
    assert request.body == {
        "model": "tts-test",
        "input": "Hello there.",
        "voice": "nova",
        "response_format": response_format,
    }


# -- timeouts: a long reply streamed with small gaps is never cut (no limit on the whole answer),
# a server that stops sending is given up after the read (idle) timeout. Scaled down (a 0.5 s read
# timeout in place of the default 30 s): the streamed reply lasts four read timeouts, as a reply
# of two minutes would against the default.

READ_TIMEOUT = 0.5
REPLY = "Hello, I am a voice agent running in a job pod."  # the fake's answer, a chunk a word


async def test_a_reply_streamed_longer_than_the_read_timeout_arrives_whole(server: FakeOpenAI) -> None:
    """Issue 14, defect 14: the client had a 30 s limit on the whole answer, so a long reply
    streamed steadily was cut off after 30 s."""
    server.chunk_gap = READ_TIMEOUT * 4 / len(REPLY.split())  # 4 read timeouts in all, <1/2 per gap
    llm = OpenAILLM("gpt-test", base_url=server.base_url, timeouts=Timeouts(connect=5, read=READ_TIMEOUT))
    started = time.monotonic()
    try:
        chunks = [c async for c in llm.chat(question("hello"), [])]
    finally:
        await llm.aclose()
    took = time.monotonic() - started
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text == REPLY
    assert took > 3 * READ_TIMEOUT, f"the reply was meant to outlast the read timeout, took {took:.2f}s"


async def test_a_server_that_stalls_is_given_up_after_the_read_timeout(server: FakeOpenAI) -> None:
    server.chat_script = ["stall"]
    server.stall_seconds = READ_TIMEOUT * 6
    llm = OpenAILLM("gpt-test", base_url=server.base_url, timeouts=Timeouts(connect=5, read=READ_TIMEOUT))
    started = time.monotonic()
    received: list[str] = []

    async def read() -> None:
        async for c in llm.chat(question("hello"), []):
            if isinstance(c, TextDelta):
                received.append(c.text)

    try:
        with pytest.raises(APIConnectionError, match="chat completion stream failed"):
            await read()
    finally:
        await llm.aclose()
    took = time.monotonic() - started
    assert received == ["Let me think"], "what arrived before the stall was passed on"
    assert READ_TIMEOUT <= took < server.stall_seconds, f"given up after {took:.2f}s"


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeouts must be positive"):
        Timeouts(connect=0)
    assert Timeouts().client_timeout().total is None
