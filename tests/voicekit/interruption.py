"""The caller cuts into a long story: what the voice tests of both runtimes do the same way."""

from __future__ import annotations

import asyncio

from devenv.caller import Caller
from devenv.speech import speak


async def interrupt_a_story(caller: Caller) -> tuple[float, float]:
    """The caller asks for a long story and speaks up 3 s into it, while the agent is heard
    talking; the times (on the caller's recording) it began to speak and the agent's playback
    stopped."""
    interruption = await speak("Hello, who are you?")

    _, said = await caller.say(await speak("Please tell me a long story."))
    story_start = await caller.agent_starts(said)
    await asyncio.sleep(3.0)  # well into the story (about 25 s long)
    cut_at, _ = await caller.say(interruption)
    assert caller.loud_times(cut_at - 0.5), "the agent was not speaking when the caller cut in"
    stopped = await caller.agent_stops(story_start)

    print(f"playback stopped {stopped - cut_at:.2f}s after the caller began to speak")
    return cut_at, stopped
