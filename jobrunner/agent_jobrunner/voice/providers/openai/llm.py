"""Chat completions (``POST /chat/completions``, ``stream: true``) with tool calls.

Works with OpenAI and the servers that speak its API (Groq, vLLM, Ollama, llama.cpp, ...).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from agent_jobrunner.voice.chat import ChatContext, ChatMessage, ToolCall
from agent_jobrunner.voice.interfaces import ChatChunk, ProviderError, TextDelta
from agent_jobrunner.voice.providers.openai import sse
from agent_jobrunner.voice.providers.openai.http import (
    APIConnectionError,
    OpenAIClient,
    Timeouts,
    raise_for_status,
)
from agent_jobrunner.voice.tools import FunctionTool


def message_json(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def tool_json(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


class _ToolCallParts:
    """A tool call as it streams in: id and name first, arguments in pieces."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def done(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, arguments="".join(self.arguments))


class OpenAILLM:
    def __init__(
        self,
        model: str,
        *,
        client: OpenAIClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.model = model
        self.client = client or OpenAIClient(base_url, api_key, timeouts)
        self.temperature = temperature

    def request_body(self, context: ChatContext, tools: Sequence[FunctionTool]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [message_json(m) for m in context],
            "stream": True,
        }
        if tools:
            body["tools"] = [tool_json(t) for t in tools]
            body["tool_choice"] = "auto"
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def chat(self, context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[ChatChunk]:
        body = self.request_body(context, tools)
        calls: dict[int, _ToolCallParts] = {}
        finished = False
        try:
            async with self.client.session().post(
                self.client.url("chat/completions"), json=body, headers=self.client.headers()
            ) as response:
                await raise_for_status(response)
                async for event in sse.events(response.content):
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    chunk = _parse(event.data)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for part in delta.get("tool_calls") or []:
                            _add_tool_part(calls, part)
                        if choice.get("finish_reason"):
                            finished = True
        except (aiohttp.ClientError, TimeoutError) as err:
            raise APIConnectionError(f"chat completion stream failed: {type(err).__name__}: {err}") from err
        if not finished:
            raise APIConnectionError("the chat completion stream ended before it was complete")
        for index in sorted(calls):
            call = calls[index].done()
            if not call.name:
                raise ProviderError(f"the model sent a tool call without a name: {call}")
            yield call

    async def aclose(self) -> None:
        await self.client.aclose()


def _parse(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as err:
        raise ProviderError(f"a stream chunk is not JSON: {data[:200]!r}") from err
    if not isinstance(chunk, dict):
        raise ProviderError(f"a stream chunk is not an object: {data[:200]!r}")
    if "error" in chunk:
        raise ProviderError(f"the server reported an error mid-stream: {chunk['error']}")
    return chunk


def _add_tool_part(calls: dict[int, _ToolCallParts], part: dict[str, Any]) -> None:
    entry = calls.setdefault(int(part.get("index", 0)), _ToolCallParts())
    if part.get("id"):
        entry.id = part["id"]
    function = part.get("function") or {}
    if function.get("name"):
        entry.name = function["name"]
    if function.get("arguments"):
        entry.arguments.append(function["arguments"])
