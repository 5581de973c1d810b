"""The inference executor a livekit-agents job gets (the turn detector runs its model through it)."""

from __future__ import annotations

from livekit.agents.ipc.inference_executor import InferenceExecutor


class NoInferenceExecutor(InferenceExecutor):
    """For an agent that registered no inference runner (no turn-detector plugin imported)."""

    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise RuntimeError(
            f"inference {method!r} asked for, but the agent's module registered no inference runner "
            "(import the plugin, e.g. livekit.plugins.turn_detector, at the top of the agent's module)"
        )
