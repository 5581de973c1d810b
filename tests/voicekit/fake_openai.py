"""A local stand-in for the OpenAI API on 127.0.0.1, speaking its real wire format.

Chat completions stream as server-sent events (``data: {chunk}`` ... ``data: [DONE]``), tool
calls arrive in pieces as OpenAI sends them; transcriptions take multipart/form-data with a
WAV file; speech streams raw 24 kHz PCM (or WAV). ``chat_script`` makes chat requests fail on
purpose: "500" answers HTTP 500 with an OpenAI error body, "broken" cuts the stream off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from agent_jobrunner.voice import wav
from agent_jobrunner.voice.audio import Pcm


@dataclasses.dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_of(content: str | list[dict[str, Any]]) -> str:
    """A message's text: its content is a string, or a list of parts (``{"type": "text", ...}``)."""
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def tone(seconds: float, rate: int, hz: float = 440.0) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return Pcm((np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16), rate)


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        # per chat request, in order: "ok", "500", "broken", "stall" (a few chunks, then silence)
        self.chat_script: list[str] = []
        self.chunk_gap = 0.005  # seconds between two chunks of a streamed answer
        self.stall_seconds = 5.0  # how long "stall" stays silent before it hangs up
        self.transcript = "what is the weather in paris"
        self.speech = tone(1.0, 24_000)
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        self.app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(self.app, handle_signals=False)
        self.base_url = ""

    async def start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        await self._runner.cleanup()

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # ------------------------------------------------------------------------------ chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        behaviour = self.chat_script.pop(0) if self.chat_script else "ok"
        if behaviour == "500":
            return web.json_response(
                {"error": {"message": "The server had an error", "type": "server_error", "code": None}},
                status=500,
            )
        if not body.get("stream"):
            return web.json_response({"error": {"message": "only streaming here"}}, status=400)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if behaviour == "broken":
            await response.write(sse(chunk({"role": "assistant", "content": ""})))
            await response.write(sse(chunk({"content": "The weather"})))
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()  # mid-stream, no terminating chunk
            return response
        if behaviour == "stall":
            await response.write(sse(chunk({"role": "assistant", "content": ""})))
            await response.write(sse(chunk({"content": "Let me think"})))
            await asyncio.sleep(self.stall_seconds)
            return response
        for piece in self._answer(body):
            await response.write(sse(piece))
            await asyncio.sleep(self.chunk_gap)
        await response.write(sse("[DONE]"))
        await response.write_eof()
        return response

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        last = body["messages"][-1]
        tools = {t["function"]["name"] for t in body.get("tools", [])}
        if last["role"] == "user" and "weather" in text_of(last["content"]) and "get_weather" in tools:
            arguments = ['{"ci', 'ty": "pa', 'ris"}']
            first = {
                "index": 0,
                "id": "call_fake_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
            parts = [chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
            parts += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in arguments]
            return [*parts, chunk({}, "tool_calls")]
        if last["role"] == "tool":
            text = f"The weather in Paris is {last['content']}."
        else:
            text = "Hello, I am a voice agent running in a job pod."
        words = text.split(" ")
        parts = [chunk({"role": "assistant", "content": ""})]
        parts += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        return [*parts, chunk({}, "stop")]

    # ------------------------------------------------------------------------------ audio

    async def _transcribe(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {}
        async for part in await request.multipart():
            assert isinstance(part, aiohttp.BodyPartReader)
            if part.filename:
                audio = wav.decode(bytes(await part.read()))
                fields[part.name or "file"] = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type", ""),
                    "sample_rate": audio.sample_rate,
                    "duration": audio.duration,
                }
            else:
                fields[part.name or ""] = await part.text()
        self.requests.append(Recorded(request.path, dict(request.headers), fields))
        if "file" not in fields or "model" not in fields:
            return web.json_response({"error": {"message": "file and model are required"}}, status=400)
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        if not body.get("input"):
            return web.json_response({"error": {"message": "input is required"}}, status=400)
        wav_format = body.get("response_format") == "wav"
        data = wav.encode(self.speech) if wav_format else self.speech.samples.astype("<i2").tobytes()
        response = web.StreamResponse(headers={"Content-Type": "audio/wav" if wav_format else "audio/pcm"})
        await response.prepare(request)
        for start in range(0, len(data), 4801):  # odd sizes: samples split across chunks
            await response.write(data[start : start + 4801])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response
