"""The rule-based model as a livekit-agents ``llm.LLM``: streamed words and tool calls, offline."""

from __future__ import annotations

from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, llm
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import shortuuid

from agent_jobrunner.voice import chat
from agent_jobrunner.voice.interfaces import TextDelta
from agent_jobrunner.voice.providers.rules import RuleBasedLLM

_ROLES: dict[str, chat.Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def native_context(context: llm.ChatContext) -> chat.ChatContext:
    """livekit-agents' chat context as the rule model reads it: messages, calls and their results."""
    out = chat.ChatContext()
    for item in context.items:
        if isinstance(item, llm.ChatMessage):
            out.append(chat.ChatMessage(_ROLES.get(item.role, "user"), item.text_content or ""))
        elif isinstance(item, llm.FunctionCall):
            call = chat.ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)
            out.append(chat.ChatMessage("assistant", tool_calls=(call,)))
        elif isinstance(item, llm.FunctionCallOutput):
            out.append(chat.ChatMessage("tool", item.output, tool_call_id=item.call_id, name=item.name))
    return out


class RulesLLM(llm.LLM[Any]):
    def __init__(self, rules: RuleBasedLLM | None = None) -> None:
        super().__init__()
        self.rules = rules or RuleBasedLLM()

    @property
    def model(self) -> str:
        return "rules"

    @property
    def provider(self) -> str:
        return "agent_jobrunner"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _RulesStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _RulesStream(llm.LLMStream):
    def __init__(
        self,
        model: RulesLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(model, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._rules = model.rules

    async def _run(self) -> None:
        request_id = shortuuid("rules_")
        names = {tool.id for tool in self._tools}
        async for chunk in self._rules.answer(native_context(self._chat_ctx), names):
            if isinstance(chunk, TextDelta):
                delta = llm.ChoiceDelta(role="assistant", content=chunk.text)
            else:
                call = llm.FunctionToolCall(name=chunk.name, arguments=chunk.arguments, call_id=chunk.id)
                delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))
