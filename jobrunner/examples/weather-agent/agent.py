"""A livekit-agents voice agent in the style of LiveKit's quick-start, unmodified for the operator.

Runs as it is under livekit-agents (``python agent.py start``, with LIVEKIT_URL, LIVEKIT_API_KEY
and LIVEKIT_API_SECRET) and under the operator (an AgentDeployment with ``runtime:
livekit-agents`` and ``entrypoint: agent:server``), one pod per job.

It runs offline: Silero VAD (``livekit-plugins-silero``), and the operator's offline plugins for
speech (PocketSphinx), voice (espeak-ng) and a rule-based model that answers a few questions and
calls ``get_weather`` as a chat model would. For a real deployment, swap them for the plugins
you use (``openai.LLM()``, ``deepgram.STT()``, ...); nothing else changes. With
``OPENAI_BASE_URL`` set, the LLM is ``livekit-plugins-openai``'s, against that
OpenAI-compatible server.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    ConversationItemAddedEvent,
    JobContext,
    JobProcess,
    RunContext,
    cli,
    function_tool,
    llm,
)
from livekit.plugins import silero

from agent_jobrunner.lka.plugins import EspeakTTS, PocketSphinxSTT, RulesLLM

logger = logging.getLogger("weather-agent")

WEATHER = {"paris": "sunny and warm", "london": "cloudy and cool"}


class Assistant(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="You are a friendly voice assistant. Answer in one or two short sentences."
        )

    @function_tool
    async def get_weather(self, context: RunContext, city: str) -> str:
        """Look up the current weather in a city.

        Args:
            city: the city, in lower case
        """
        logger.info("get_weather called", extra={"city": city})
        return WEATHER.get(city.lower(), "mild")


def prewarm(proc: JobProcess) -> None:
    """Load the VAD once per process, before any job (a warm pod under the operator)."""
    proc.userdata["vad"] = silero.VAD.load()


def make_llm() -> llm.LLM:
    base_url = os.environ.get("OPENAI_BASE_URL", "")
    if base_url:
        from livekit.plugins import openai

        return openai.LLM(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), base_url=base_url)
    return RulesLLM()


def no_cpu_load() -> float:
    return 0.0


# Under the operator nothing here is used: no livekit-agents worker runs in a pod (one job per
# pod; the operator reports jobs / maxConcurrentJobs), so the plain AgentServer(setup_fnc=...)
# is all a deployment needs. Only under livekit-agents' own worker (`python agent.py start`)
# does it report the machine's CPU load, and LiveKit offers no job above 0.7: on a machine busy
# with other work (the tests' two shared cores) set IGNORE_CPU_LOAD=1.
if os.environ.get("IGNORE_CPU_LOAD"):
    server = AgentServer(setup_fnc=prewarm, load_fnc=no_cpu_load, load_threshold=1.0)
else:
    server = AgentServer(setup_fnc=prewarm)


@server.rtc_session(agent_name=os.environ.get("AGENT_NAME", "weather-agent"))
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session: AgentSession = AgentSession(
        vad=ctx.proc.userdata["vad"], stt=PocketSphinxSTT(), llm=make_llm(), tts=EspeakTTS()
    )

    @session.on("conversation_item_added")
    def _said(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage):
            logger.info(
                "conversation item added",
                extra={
                    "role": item.role,
                    "content": item.text_content or "",
                    "interrupted": item.interrupted,
                    # livekit-agents' own per-turn figures (end_of_turn_delay, llm_node_ttft,
                    # e2e_latency, ...), in seconds; tests/bench/lka_voice_latency.py reads them
                    **{f"metric_{name}": value for name, value in item.metrics.items()},
                },
            )

    await session.start(agent=Assistant(), room=ctx.room)
    logger.info("weather agent ready")


if __name__ == "__main__":
    cli.run_app(server)
