"""The benchmark's trivial livekit-agents agent (``lka_bench``) with an inference runner
registered at import, as importing the turn detector plugin does: its pod starts livekit-agents'
inference process with the prewarm, before it counts idle (``tests/bench/runner_memory.py``
reads what that process costs a pod). The runner is ``lka_inference``'s, which loads no model:
the turn detector's weights come from Hugging Face, which this machine cannot reach.
"""

from __future__ import annotations

from tests.agents.lka_bench import server
from tests.agents.lka_inference import Shout  # registers the runner

__all__ = ["Shout", "server"]
