"""A call to the livekit-agents example (``jobrunner/examples/weather-agent``) under the operator:
dispatch it to a new room, ask it the weather in Paris as a caller, transcribe its answer."""

from __future__ import annotations

import uuid

from livekit import api

from devenv.caller import Caller
from devenv.kubeclient import eventually
from devenv.livekit import LiveKitAccess
from devenv.speech import speak, transcribe
from tests.support.operator import Deployments, dispatch, starts_reported, wait_participant

# what the answer to "What is the weather in Paris?" holds (its get_weather tool's result)
ANSWER_WORDS = {"weather", "paris", "sunny", "warm"}


async def ask_the_weather(
    lk: api.LiveKitAPI, livekit: LiveKitAccess, deployments: Deployments, name: str, agent_name: str
) -> tuple[list[str], str]:
    """The pods that ran the call, and the agent's answer as transcribed; the room is deleted
    after (the job then ends)."""
    room = f"room-{uuid.uuid4().hex[:6]}"
    caller = Caller()
    try:
        await dispatch(lk, agent_name, room)
        await caller.join(livekit, room)
        await wait_participant(lk, room, "agent-")
        await caller.wait_agent_track(90)
        await starts_reported(deployments, name, 1)

        async def labelled() -> list[str] | None:  # a pool pod: once the call joined (placement)
            pods = await deployments.pods(name)
            return [
                p.metadata.name for p in pods if p.metadata.labels.get("agentoperator.dev/job-id")
            ] or None

        busy = await eventually(labelled, 30, f"the pod of {name}'s call labelled with its job")
        answer = await ask(caller)
    finally:
        await caller.leave()
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    return busy, answer


async def ask(caller: Caller) -> str:
    """The caller asks the weather in Paris; the agent's answer, as transcribed."""
    _, said = await caller.say(await speak("What is the weather in Paris?"))
    start = await caller.agent_starts(said)
    end = await caller.agent_stops(said)
    return await transcribe(caller.audio(start - 0.3, end + 0.3))
