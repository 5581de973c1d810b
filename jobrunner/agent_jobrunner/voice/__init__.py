"""The voice pipeline a job runs: VAD → STT → LLM (with function calls) → TTS, in a LiveKit room.

See :class:`VoicePipeline`; providers live in ``agent_jobrunner.voice.providers``.
"""

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, ROOM_SAMPLE_RATE, Framer, Pcm, Resampler
from agent_jobrunner.voice.chat import ChatContext, ChatMessage, ContextLimits, ToolCall
from agent_jobrunner.voice.events import (
    AgentStartedSpeaking,
    AgentStoppedSpeaking,
    Events,
    FunctionCalled,
    MessageAdded,
    TranscriptCommitted,
    TurnCompleted,
    TurnFailed,
    UserStartedSpeaking,
    UserStoppedSpeaking,
    VoiceEvent,
)
from agent_jobrunner.voice.interfaces import (
    LLM,
    STT,
    TTS,
    VAD,
    ChatChunk,
    ProviderError,
    StreamingSTT,
    STTStream,
    TextDelta,
    Transcript,
    VADEvent,
    VADEventType,
    VADStream,
)
from agent_jobrunner.voice.metrics import LatencySummary, TurnMetrics, summarize
from agent_jobrunner.voice.pipeline import PipelineOptions, VoicePipeline
from agent_jobrunner.voice.sentences import SentenceStream, split_sentences
from agent_jobrunner.voice.tools import FunctionTool, ToolError, function_tool

__all__ = [
    "LLM",
    "MODEL_SAMPLE_RATE",
    "ROOM_SAMPLE_RATE",
    "STT",
    "TTS",
    "VAD",
    "AgentStartedSpeaking",
    "AgentStoppedSpeaking",
    "ChatChunk",
    "ChatContext",
    "ChatMessage",
    "ContextLimits",
    "Events",
    "Framer",
    "FunctionCalled",
    "FunctionTool",
    "LatencySummary",
    "MessageAdded",
    "Pcm",
    "PipelineOptions",
    "ProviderError",
    "Resampler",
    "STTStream",
    "SentenceStream",
    "StreamingSTT",
    "TextDelta",
    "ToolCall",
    "ToolError",
    "Transcript",
    "TranscriptCommitted",
    "TurnCompleted",
    "TurnFailed",
    "TurnMetrics",
    "UserStartedSpeaking",
    "UserStoppedSpeaking",
    "VADEvent",
    "VADEventType",
    "VADStream",
    "VoiceEvent",
    "VoicePipeline",
    "function_tool",
    "split_sentences",
    "summarize",
]
