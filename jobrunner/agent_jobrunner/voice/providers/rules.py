"""A small rule-based stand-in for an LLM: answers a few phrases, and calls a function for one.

One rule reads the conversation: "what did I ask first" is answered with the first thing the
user said in the chat context, which shows whether an earlier conversation was carried over
(a job restarted on a new pod with its checkpoint).

It streams its answers word by word and asks for tools exactly as a chat model does, so the
pipeline runs the same way with it as with a real model, offline and deterministically.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

from agent_jobrunner.voice.chat import ChatContext, ChatMessage, ToolCall
from agent_jobrunner.voice.interfaces import ChatChunk, TextDelta
from agent_jobrunner.voice.tools import FunctionTool

STORY = (
    "Once upon a time there was a little robot who lived in a quiet town by the sea. "
    "Every morning the robot walked along the beach and counted the waves. "
    "One day it found a bottle with a message inside. "
    "The message asked for help from a lighthouse keeper far away. "
    "The robot built a small boat from wood and sailed across the bay. "
    "After three days it reached the lighthouse and met the keeper. "
    "They became good friends, and the robot stayed to keep the light burning every night."
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """When ``pattern`` is found in what the user said, say ``reply``.

    With ``tool``, that function is called first (``arguments`` may use the pattern's named
    groups, as ``{city}``) and ``reply`` may use its result as ``{result}``. ``reply`` may use
    ``{first_question}``, the first thing the user said (``unknown`` is said instead when the
    user has said nothing before).
    """

    pattern: str
    reply: str
    tool: str = ""
    arguments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    examples: tuple[str, ...] = ()
    unknown: str = ""


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        r"\bwhat did i (ask|say)\b",  # "... first?" (an offline STT may hear "... you")
        "You first asked: {first_question}.",
        examples=("what did i ask first",),
        unknown="You have not asked me anything yet.",
    ),
    Rule(
        r"\bweather\b.*?\bin (?P<city>[a-z]+)",
        "The weather in {city} is {result}.",
        tool="get_weather",
        arguments={"city": "{city}"},
        examples=("what is the weather in paris", "what is the weather in london"),
    ),
    Rule(r"\b(story|tale)\b", STORY, examples=("please tell me a long story", "tell me a story")),
    Rule(
        r"\b(hello|hi|who are you)\b",
        "Hello, I am a voice agent running in a job pod.",
        examples=("hello who are you", "hello there"),
    ),
    Rule(r"\bname\b", "My name is Pocket Agent.", examples=("what is your name",)),
    Rule(r"\b(stop|wait)\b", "Okay, I will stop.", examples=("stop please", "wait")),
    Rule(r"\b(bye|goodbye)\b", "Goodbye, have a nice day.", examples=("goodbye", "thank you goodbye")),
)
FALLBACK = "Sorry, I did not understand that."


class RuleBasedLLM:
    def __init__(
        self, rules: Sequence[Rule] = DEFAULT_RULES, fallback: str = FALLBACK, word_delay: float = 0.0
    ) -> None:
        self.rules = tuple(rules)
        self.fallback = fallback
        # seconds between streamed words (0: as fast as the consumer takes them)
        self.word_delay = word_delay

    def phrases(self) -> list[str]:
        """What users are expected to say: a vocabulary for an offline STT."""
        return [example for rule in self.rules for example in rule.examples]

    def match(self, text: str) -> tuple[Rule, dict[str, str]] | None:
        lowered = text.lower()
        for rule in self.rules:
            found = re.search(rule.pattern, lowered)
            if found is not None:
                return rule, {k: v for k, v in found.groupdict().items() if v is not None}
        return None

    async def chat(self, context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[ChatChunk]:
        async for chunk in self.answer(context, {tool.name for tool in tools}):
            yield chunk

    async def answer(self, context: ChatContext, tool_names: Collection[str]) -> AsyncIterator[ChatChunk]:
        """The reply to ``context`` when the functions in ``tool_names`` can be called."""
        last = context.last()
        if last is None:
            return
        if last.role == "tool":
            reply = self._after_tool(context, last)
        elif last.role == "user":
            matched = self.match(last.content)
            if matched is None:
                reply = self.fallback
            else:
                rule, groups = matched
                if rule.tool and rule.tool in tool_names:
                    arguments = {k: v.format(**groups) for k, v in rule.arguments.items()}
                    yield _tool_call(rule.tool, arguments)
                    return
                reply = self._reply(rule, context, groups) if not rule.tool else self.fallback
        else:
            return
        for index, word in enumerate(reply.split(" ")):
            if self.word_delay:
                await asyncio.sleep(self.word_delay)
            else:
                await asyncio.sleep(0)
            yield TextDelta(word if index == 0 else " " + word)

    def _after_tool(self, context: ChatContext, result: ChatMessage) -> str:
        user = context.last("user")
        matched = self.match(user.content) if user is not None else None
        if matched is None:
            return result.content
        rule, groups = matched
        return self._reply(rule, context, groups, result.content)

    @staticmethod
    def _reply(rule: Rule, context: ChatContext, groups: Mapping[str, str], result: str = "") -> str:
        if "{first_question}" not in rule.reply:
            return rule.reply.format(result=result, **groups)
        said = [m.content.strip() for m in context if m.role == "user" and m.content.strip()]
        if len(said) < 2:  # the question itself is the only thing said
            return rule.unknown or rule.reply.format(result=result, first_question="nothing", **groups)
        first = said[0].rstrip(".?! ")
        return rule.reply.format(result=result, first_question=first, **groups)


def _tool_call(name: str, arguments: Mapping[str, str]) -> ChatChunk:
    return ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=json.dumps(dict(arguments)))
