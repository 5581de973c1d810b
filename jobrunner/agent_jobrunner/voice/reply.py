"""One agent reply: LLM (with tool rounds) → sentences → TTS → playback, as three overlapping tasks.

The LLM's text is cut into sentences as it streams; each sentence is synthesized while the
previous one plays. Cancelling :meth:`Reply.run` is an interruption: playback stops at once
and the chat context gets the part of the reply that was heard, marked ``interrupted``.
A provider failure ends the reply early as a failed turn; it never escapes ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence

from agent_jobrunner.voice.audio import Pcm
from agent_jobrunner.voice.chat import ChatContext, ChatMessage, ToolCall
from agent_jobrunner.voice.events import (
    AgentStartedSpeaking,
    AgentStoppedSpeaking,
    Events,
    FunctionCalled,
    MessageAdded,
    TurnFailed,
)
from agent_jobrunner.voice.interfaces import LLM, TTS, TextDelta
from agent_jobrunner.voice.metrics import TurnTimeline
from agent_jobrunner.voice.playout import AudioOutput
from agent_jobrunner.voice.sentences import SentenceStream, split_sentences
from agent_jobrunner.voice.tools import FunctionTool, ToolError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sentence:
    index: int
    text: str
    round: int  # the LLM round it came from (tool calls start a new round)


@dataclasses.dataclass(frozen=True)
class Audio:
    sentence: Sentence
    pcm: Pcm


class Reply:
    def __init__(
        self,
        *,
        llm: LLM,
        tts: TTS,
        tools: Sequence[FunctionTool],
        context: ChatContext,
        output: AudioOutput,
        events: Events,
        timeline: TurnTimeline | None = None,
        script: str | None = None,
        max_tool_rounds: int = 3,
        add_to_context: bool = True,
    ) -> None:
        self._llm = llm
        self._tts = tts
        self._tools = {t.name: t for t in tools}
        self._context = context
        self._events = events
        self.timeline = timeline or TurnTimeline()
        self._script = script
        self._max_tool_rounds = max_tool_rounds
        self._add_to_context = add_to_context
        self.playback = output.playback()
        self._sentences: asyncio.Queue[Sentence | None] = asyncio.Queue()
        self._audio: asyncio.Queue[Audio | None] = asyncio.Queue()
        self._final_round = 0
        self.failed: TurnFailed | None = None
        self.spoken = False

    @property
    def speaking(self) -> bool:
        return self.playback.started and not self.playback.interrupted

    async def run(self) -> None:
        think = asyncio.create_task(self._think(), name="voice-llm")
        speak = asyncio.create_task(self._speak(), name="voice-tts")
        try:
            await self._play()
        except asyncio.CancelledError:
            self.playback.interrupt()
            self._done(interrupted=True)
            raise
        except Exception as err:
            self.playback.interrupt()
            self._fail("playout", err)
            self._done(interrupted=False)
        else:
            self._done(interrupted=False)
        finally:
            for task in (think, speak):
                task.cancel()
            await asyncio.gather(think, speak, return_exceptions=True)

    # ------------------------------------------------------------------------------ stages

    async def _think(self) -> None:
        try:
            if self._script is not None:
                for index, text in enumerate(split_sentences(self._script)):
                    self._sentence(Sentence(index, text, 0))
            else:
                await self._generate()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._fail("llm", err)
        finally:
            self._sentences.put_nowait(None)

    async def _generate(self) -> None:
        index = 0
        tokenizer = SentenceStream()
        for round_ in range(self._max_tool_rounds + 1):
            self._final_round = round_
            calls: list[ToolCall] = []
            text: list[str] = []
            stream = self._llm.chat(self._context.copy(), list(self._tools.values()))
            try:
                async for chunk in stream:
                    if isinstance(chunk, TextDelta):
                        if self.timeline.first_token is None and chunk.text.strip():
                            self.timeline.first_token = time.monotonic()
                        text.append(chunk.text)
                        for sentence in tokenizer.push(chunk.text):
                            self._sentence(Sentence(index, sentence, round_))
                            index += 1
                    else:
                        calls.append(chunk)
            finally:
                await _aclose(stream)
            if not calls or round_ == self._max_tool_rounds:
                if calls:
                    logger.warning("the model still calls tools after %d rounds; ignoring", round_)
                break
            for sentence in tokenizer.flush():
                self._sentence(Sentence(index, sentence, round_))
                index += 1
            await self._call_tools("".join(text), calls)
        for sentence in tokenizer.flush():
            self._sentence(Sentence(index, sentence, self._final_round))
            index += 1

    async def _call_tools(self, text: str, calls: list[ToolCall]) -> None:
        self._add(ChatMessage("assistant", text, tool_calls=tuple(calls)))
        for call in calls:
            tool = self._tools.get(call.name)
            error = ""
            try:
                if tool is None:
                    raise ToolError(f"there is no function {call.name!r}")
                result = await tool.invoke(call.arguments)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
                result = f"error: {error}"
                logger.warning("function %s failed: %s", call.name, error)
            logger.info("function %s(%s) -> %s", call.name, call.arguments, result)
            self._events.emit(FunctionCalled(call.name, call.arguments, result, error))
            self._add(ChatMessage("tool", result, tool_call_id=call.id, name=call.name))

    async def _speak(self) -> None:
        try:
            while (sentence := await self._sentences.get()) is not None:
                if self.timeline.first_sentence is None:
                    self.timeline.first_sentence = time.monotonic()
                stream = self._tts.synthesize(sentence.text)
                try:
                    async for pcm in stream:
                        if self.timeline.first_audio is None:
                            self.timeline.first_audio = time.monotonic()
                        self._audio.put_nowait(Audio(sentence, pcm))
                finally:
                    await _aclose(stream)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._fail("tts", err)
        finally:
            self._audio.put_nowait(None)

    async def _play(self) -> None:
        while (audio := await self._audio.get()) is not None:
            if not self.spoken:
                self.spoken = True
                self._events.emit(AgentStartedSpeaking())
            sentence = audio.sentence
            await self.playback.write(sentence.index, sentence.text, sentence.round, audio.pcm)
            if self.timeline.first_frame is None:
                self.timeline.first_frame = self.playback.first_frame_at
        if self.spoken:
            await self.playback.finish()

    # ------------------------------------------------------------------------------ bookkeeping

    def _sentence(self, sentence: Sentence) -> None:
        self._sentences.put_nowait(sentence)

    def _add(self, message: ChatMessage) -> None:
        if self._add_to_context:
            self._context.append(message)
            self._events.emit(MessageAdded(message))

    def _fail(self, stage: str, err: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = TurnFailed(stage, f"{type(err).__name__}: {err}")
        logger.warning("voice turn failed at %s: %s", stage, self.failed.error, exc_info=err)
        self._events.emit(self.failed)

    def _done(self, interrupted: bool) -> None:
        if not self.spoken:
            return
        heard = self.playback.heard_text(self._final_round if self._script is None else None)
        self._add(ChatMessage("assistant", heard, interrupted=interrupted))
        logger.info(
            "agent stopped speaking%s after %.2fs",
            " (interrupted)" if interrupted else "",
            self.playback.played,
        )
        self._events.emit(AgentStoppedSpeaking(interrupted, heard, self.playback.played))


async def _aclose(stream: object) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
