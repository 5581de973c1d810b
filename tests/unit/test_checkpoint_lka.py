"""Failover in the livekit-agents runtime (issue 15): the job's ``AgentSession`` (offline plugins,
no room) checkpoints its conversation on each item, and the same job restarted on a new pod
starts its session with the restored conversation, with no change to the agent's code."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, JobContext, JobExecutorType, JobProcess, function_tool
from livekit.agents.voice.run_result import RunResult

from agent_jobrunner.checkpoint import Checkpointer, encode_state
from agent_jobrunner.lka.agent import AgentParts
from agent_jobrunner.lka.failover import restored_chat, session_state
from agent_jobrunner.lka.plugins import RulesLLM
from agent_jobrunner.lka.session import LkaAgent, LkaJobSession
from agent_jobrunner.outcome import JobEnd
from agent_jobrunner.protocol import pb
from tests.support.deployment_fakes import job as lk_job
from tests.unit.test_checkpoint_voice import Sink

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


class Receptionist(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a receptionist.")

    @function_tool
    async def get_weather(self, city: str) -> tuple[Agent, str]:
        """The weather in a city (a forecaster takes over)."""
        return Forecaster(), "sunny and warm"


class Forecaster(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a weather forecaster.")


class Caller:
    """An agent in livekit-agents' own style, run by the job; what it said, turn by turn."""

    def __init__(self, *questions: str) -> None:
        self.questions = questions
        self.answers: list[str] = []
        self.session: AgentSession[Any] | None = None
        self.done = asyncio.Event()

    async def entrypoint(self, ctx: JobContext) -> None:
        session: AgentSession[Any] = AgentSession(llm=RulesLLM())
        self.session = session
        await session.start(Receptionist())
        for question in self.questions:
            result: RunResult[None] = await session.run(user_input=question)
            said = [e.item for e in result.events if e.type == "message" and e.item.role == "assistant"]
            self.answers.append(said[-1].text_content or "")
        self.done.set()
        await asyncio.Event().wait()


def process() -> JobProcess:
    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)


async def run_job(caller: Caller, sink: Sink, **fields: Any) -> LkaJobSession:
    request = pb.StartJobRequest(
        job=lk_job("AJ_lka").SerializeToString(), url="ws://127.0.0.1:1", token="not-a-real-token", **fields
    )
    ends: list[JobEnd] = []
    checkpointer = Checkpointer("AJ_lka", sink, request.restored_seq)
    session = LkaAgent(AgentParts(entrypoint=caller.entrypoint), process()).job(
        request, lk_job("AJ_lka"), ends.append, checkpointer
    )
    await session.start()
    await asyncio.wait_for(caller.done.wait(), 20)
    assert ends == []
    return session


def items(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, role or name) of each item of a checkpoint's chat."""
    return [
        (i["type"], i.get("role") or i.get("name") or i.get("new_agent_id", ""))
        for i in state["chat"]["items"]
    ]


async def test_the_session_checkpoints_each_item_and_a_restarted_job_carries_on() -> None:
    sink = Sink()
    first = Caller("what is the weather in paris")
    job = await run_job(first, sink)
    try:
        assert first.answers == ["The weather in paris is sunny and warm."]
        seqs = [m.checkpoint.seq for m in sink.sent]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= 4  # the start, the question, the tool round and handoff, the answer
        last = sink.states[-1]
        assert (last["runtime"], last["agent"]) == ("livekit-agents", "forecaster")  # the handoff
        assert ("message", "user") in items(last)
        assert ("function_call", "get_weather") in items(last)
        assert ("function_call_output", "get_weather") in items(last)
        assert items(last)[-2:] == [("message", "assistant"), ("agent_handoff", "forecaster")]
        assert "metrics" not in json.dumps(last)
        assert job.checkpoints.session is first.session
    finally:
        assert await job.stop("test over", 10)

    # the pod died: the same job on a new pod, with the last checkpoint the operator got
    restarted = Sink()
    second = Caller("what did i ask first")
    job = await run_job(
        second, restarted, restored_state=sink.sent[-1].checkpoint.state, restarts=1, restored_seq=seqs[-1]
    )
    try:
        assert second.answers == ["You first asked: what is the weather in paris."]
        assert second.session is not None
        history = [i.type for i in second.session.history.items]
        assert history.count("function_call") == 1  # the restored one, once
        assert restarted.sent[0].checkpoint.seq == seqs[-1] + 1
        contents = [i for t, i in items(restarted.states[-1]) if t == "message"]
        assert contents.count("user") == 2
        agent_ctx = second.session.current_agent.chat_ctx
        assert [m.text_content for m in agent_ctx.messages() if m.role == "system"] == [
            "You are a receptionist."
        ]  # the code's instructions, not a restored one
    finally:
        assert await job.stop("test over", 10)


def test_an_unreadable_or_foreign_restored_state_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    assert restored_chat(None) is None
    assert restored_chat({"runtime": "native", "chat": []}) is None
    assert restored_chat({"runtime": "livekit-agents", "chat": {"items": [{"type": "nonsense"}]}}) is None
    assert "unreadable, starting afresh" in caplog.text


async def test_a_long_history_loses_its_oldest_items_to_fit() -> None:
    session: AgentSession[Any] = AgentSession(llm=RulesLLM())
    session.history.add_message(role="system", content="instructions")
    for i in range(50):
        session.history.add_message(role="user", content=f"{i} " + "x" * 1000)
    state = session_state(session, limit=10_000)
    assert len(encode_state(state)) <= 10_000
    kept = state["chat"]["items"]
    assert kept[0]["role"] == "system"
    assert kept[-1]["content"] == ["49 " + "x" * 1000]
    assert len(kept) < 11
