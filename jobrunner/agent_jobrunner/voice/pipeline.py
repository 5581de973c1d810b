"""The voice pipeline: hear a participant, detect their turns, transcribe, answer, speak.

    pipeline = VoicePipeline(vad=vad, stt=stt, llm=llm, tts=tts, tools=[get_weather],
                             instructions="You are a helpful voice agent.")
    await pipeline.start(ctx.room)          # listens to the first remote participant
    pipeline.events.on(TurnCompleted, lambda e: print(e.metrics.total))

User speech while the agent speaks interrupts it: playback stops, and the reply goes into the
chat context as far as it was heard, marked ``interrupted``. A failing provider costs one
turn (a ``TurnFailed`` event and a warning in the log); the pipeline keeps listening.

Made in a job (the entrypoint or a task it started), the pipeline checkpoints its chat context
and turn index on every change of the context, and in a job restarted on a new pod after its
pod died it starts with the restored conversation after its own instructions
(``agent_jobrunner.voice.persist``): the agent carries on the call with no code of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from livekit import rtc

from agent_jobrunner.checkpoint import CheckpointTooLarge
from agent_jobrunner.job import JobContext, current_job_context
from agent_jobrunner.voice.audio import History, Pcm
from agent_jobrunner.voice.chat import ChatContext, ChatMessage, ContextLimits
from agent_jobrunner.voice.events import (
    Events,
    MessageAdded,
    TranscriptCommitted,
    TurnCompleted,
    TurnFailed,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from agent_jobrunner.voice.interfaces import LLM, STT, TTS, VAD, VADEvent, VADEventType, VADStream
from agent_jobrunner.voice.listen import AudioInput
from agent_jobrunner.voice.metrics import TurnMetrics, TurnTimeline
from agent_jobrunner.voice.persist import chat_state, restored_chat
from agent_jobrunner.voice.playout import AudioOutput
from agent_jobrunner.voice.recognition import Recognition
from agent_jobrunner.voice.reply import Reply
from agent_jobrunner.voice.tools import FunctionTool, as_tools

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    allow_interruptions: bool = True
    max_tool_rounds: int = 3
    frame_ms: int = 20  # the agent's audio frames
    output_queue_ms: int = 200  # audio queued ahead in the room's source: the most an interruption drops
    track_name: str = "agent-voice"
    stt_chunk_seconds: float = 0.1  # audio batched per push to a streaming STT
    # the chat context's bound (None: none); the oldest turns go first, the instructions stay
    max_context_turns: int | None = 50
    max_context_chars: int | None = 40_000


class VoicePipeline:
    def __init__(
        self,
        *,
        vad: VAD,
        stt: STT,
        llm: LLM,
        tts: TTS,
        tools: Sequence[FunctionTool | Callable[..., Any]] = (),
        instructions: str = "",
        chat_context: ChatContext | None = None,
        options: PipelineOptions | None = None,
    ) -> None:
        if stt.sample_rate != vad.sample_rate:
            raise ValueError(f"the VAD ({vad.sample_rate} Hz) and the STT ({stt.sample_rate} Hz) must agree")
        self.vad = vad
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.tools = as_tools(tools)
        self.options = options or PipelineOptions()
        self.events = Events()
        self._context = chat_context or ChatContext.with_instructions(instructions)
        self._context.limit(ContextLimits(self.options.max_context_turns, self.options.max_context_chars))
        self._turn_index = 0  # user turns so far in the call (on from a restored checkpoint's)
        self._job: JobContext | None = None
        self._bind_job()
        self._context.on_append(self._on_context_change)
        self._turns: list[TurnMetrics] = []
        self._input: AudioInput | None = None
        self._output: AudioOutput | None = None
        self._room: rtc.Room | None = None
        self._listener: asyncio.Task[None] | None = None
        self._history = History(vad.sample_rate)
        self._recognition: Recognition | None = None
        self._fed = 0  # absolute sample index up to which the current utterance went to the STT
        self._last_turn: asyncio.Task[None] | None = None
        self._turn_tasks: set[asyncio.Task[None]] = set()
        self._reply_task: asyncio.Task[None] | None = None
        self._reply: Reply | None = None

    # ------------------------------------------------------------------------------ public

    @property
    def chat_context(self) -> ChatContext:
        return self._context

    @property
    def turn_index(self) -> int:
        """How many user turns the call has had (a restarted job's go on from the restored count)."""
        return self._turn_index

    @property
    def turns(self) -> list[TurnMetrics]:
        """Metrics of every answered turn so far."""
        return list(self._turns)

    @property
    def agent_speaking(self) -> bool:
        return self._reply is not None and self._reply.speaking

    @property
    def participant(self) -> str | None:
        """The identity of the participant being listened to."""
        return self._input.participant if self._input is not None else None

    async def start(self, room: rtc.Room, participant: str | None = None) -> None:
        """Publish the agent's audio track and listen to ``participant`` (default: the first one)."""
        if self._listener is not None:
            raise RuntimeError("the pipeline is already started")
        self._bind_job()
        self._room = room
        options = self.options
        self._output = AudioOutput(
            frame_ms=options.frame_ms, queue_ms=options.output_queue_ms, track_name=options.track_name
        )
        await self._output.publish(room.local_participant)
        self._input = AudioInput(room, participant, sample_rate=self.vad.sample_rate)
        self._listener = asyncio.create_task(self._listen(), name="voice-listen")

    async def say(self, text: str, add_to_context: bool = True) -> None:
        """Speak ``text`` (a greeting, say); returns when it was played or interrupted."""
        task = await self._begin_reply(
            Reply(**self._reply_parts(), script=text, add_to_context=add_to_context)
        )
        await _settled(task)

    async def aclose(self) -> None:
        tasks = [t for t in (self._listener, self._reply_task, *self._turn_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._recognition is not None:
            await self._recognition.aclose()
            self._recognition = None
        if self._input is not None:
            await self._input.aclose()
        if self._output is not None:
            if self._room is not None and self._room.isconnected():
                with contextlib.suppress(Exception):
                    await self._output.unpublish(self._room.local_participant)
            await self._output.aclose()
        self._listener = None

    # ------------------------------------------------------------------------------ checkpoints

    def _bind_job(self) -> None:
        """In a job: restore a restarted job's conversation (once) and checkpoint from now on."""
        if self._job is not None:
            return
        self._job = current_job_context()
        if self._job is None:
            return
        restored = restored_chat(self._job.restored)
        if restored is not None:
            self._context.restore(restored.messages)
            self._turn_index = restored.turn
            logger.info(
                "restored the conversation: %d messages, turn %d", len(restored.messages), restored.turn
            )

    def _on_context_change(self, message: ChatMessage) -> None:
        if message.role == "user":
            self._turn_index += 1
        if self._job is None:
            return
        try:
            self._job.checkpoint(chat_state(self._context.messages, self._turn_index))
        except CheckpointTooLarge as err:  # the instructions alone are over the bound
            logger.warning("could not checkpoint the conversation: %s", err)
        except Exception:  # a checkpoint never costs the call
            logger.exception("could not checkpoint the conversation")

    # ------------------------------------------------------------------------------ listening

    async def _listen(self) -> None:
        assert self._input is not None
        vad = self.vad.stream()
        frames = self._input.frames()
        try:
            async for pcm in frames:
                await self._hear(vad, pcm)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.exception("the voice pipeline stopped listening")
            self.events.emit(TurnFailed("vad", f"{type(err).__name__}: {err}"))
        finally:
            await frames.aclose()
            await vad.aclose()

    async def _hear(self, vad: VADStream, pcm: Pcm) -> None:
        now = time.monotonic()
        self._history.append(pcm)
        for event in await vad.push(pcm):
            if event.type is VADEventType.START_OF_SPEECH:
                self._on_speech_start(event)
            else:
                self._on_speech_end(event, now)
        recognition = self._recognition
        chunk = self.options.stt_chunk_seconds * self._history.sample_rate
        if recognition is not None and recognition.streaming and self._history.total - self._fed >= chunk:
            self._feed(recognition)

    def _feed(self, recognition: Recognition) -> None:
        recognition.push(self._history.since(self._fed))
        self._fed = self._history.total

    def _on_speech_start(self, event: VADEvent) -> None:
        logger.info("user started speaking")
        self.events.emit(UserStartedSpeaking(self.participant or ""))
        if self.options.allow_interruptions:
            self._interrupt()
        if self._recognition is not None:  # an utterance that never ended (cannot happen with a sane VAD)
            self._spawn(self._recognition.aclose())
        self._recognition = Recognition(self.stt)
        if event.speech is not None:
            self._recognition.push(event.speech)
        self._fed = round(event.position * self._history.sample_rate)

    def _on_speech_end(self, event: VADEvent, now: float) -> None:
        recognition, self._recognition = self._recognition, None
        speech = event.speech or Pcm.empty(self.vad.sample_rate)
        speech_end = event.speech_end if event.speech_end is not None else event.position
        duration = speech_end - event.speech_start
        logger.info("user stopped speaking after %.2fs", duration)
        self.events.emit(UserStoppedSpeaking(self.participant or "", duration))
        if recognition is None:
            return
        if recognition.streaming:
            self._feed(recognition)
        # the last voiced audio reached us this long before the audio just received ended
        behind = self._history.total / self._history.sample_rate - speech_end
        timeline = TurnTimeline(speech_ended=now - behind, end_of_speech=now)
        self._last_turn = self._spawn(self._turn(recognition, speech, timeline, self._last_turn))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._turn_tasks.add(task)
        task.add_done_callback(self._turn_tasks.discard)
        return task

    def _interrupt(self) -> None:
        task = self._reply_task
        if task is not None and not task.done():
            if self._reply is not None and self._reply.speaking:
                logger.info("user speech while the agent speaks: interrupting")
            task.cancel()

    # ------------------------------------------------------------------------------ turns

    async def _turn(
        self,
        recognition: Recognition,
        speech: Pcm,
        timeline: TurnTimeline,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            transcript = await recognition.finish(speech)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._fail("stt", err)
            return
        timeline.transcript = time.monotonic()
        if previous is not None:  # turns are committed in the order they were spoken
            await asyncio.gather(previous, return_exceptions=True)
        text = transcript.text.strip()
        if not text:
            logger.info("no words recognized in %.2fs of speech", speech.duration)
            return
        self.events.emit(TranscriptCommitted(text))
        message = self._context.append(ChatMessage("user", text))
        self.events.emit(MessageAdded(message))
        reply = Reply(**self._reply_parts(), timeline=timeline, max_tool_rounds=self.options.max_tool_rounds)
        task = await self._begin_reply(reply)
        await _settled(task)

    def _reply_parts(self) -> dict[str, Any]:
        assert self._output is not None, "start() the pipeline first"
        return {
            "llm": self.llm,
            "tts": self.tts,
            "tools": self.tools,
            "context": self._context,
            "output": self._output,
            "events": self.events,
        }

    async def _begin_reply(self, reply: Reply) -> asyncio.Task[None]:
        previous = self._reply_task
        if previous is not None and not previous.done():
            if self.options.allow_interruptions:
                previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        self._reply = reply
        self._reply_task = asyncio.create_task(self._run_reply(reply), name="voice-reply")
        return self._reply_task

    async def _run_reply(self, reply: Reply) -> None:
        try:
            await reply.run()
        finally:
            if self._reply is reply:
                self._reply = None
            metrics = reply.timeline.metrics()
            if metrics is not None:
                self._turns.append(metrics)
                logger.info(
                    "turn latency %.0f ms (%s)",
                    metrics.total * 1000,
                    ", ".join(f"{k} {v * 1000:.0f}" for k, v in metrics.stages.items()),
                    extra=metrics.as_log_extra(),
                )
                self.events.emit(TurnCompleted(metrics))

    def _fail(self, stage: str, err: BaseException) -> None:
        failure = TurnFailed(stage, f"{type(err).__name__}: {err}")
        logger.warning("voice turn failed at %s: %s", stage, failure.error, exc_info=err)
        self.events.emit(failure)


async def _settled(task: asyncio.Task[None]) -> None:
    """Wait for a reply task, whatever its end; a bug in it is logged, not lost."""
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception):
        logger.error("a voice reply failed unexpectedly", exc_info=outcome)
