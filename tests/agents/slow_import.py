"""An agent whose module takes seconds to import, as one that loads a big model at import
time: its runner attaches to the operator that much later. The restart tests use it to stop
an operator between a job's pod creation and its runner's attach."""

from __future__ import annotations

import time

from tests.agents.stream_agents import beacon_forever

IMPORT_SECONDS = 8.0

time.sleep(IMPORT_SECONDS)

__all__ = ["beacon_forever"]
