"""The leaving leader's side of a handover, as the deployments see it (see ``leadership``)."""

from __future__ import annotations

import asyncio


class Handover:
    """While ``active``, deployments hold LiveKit's job offers instead of taking them, and the
    warm pools stand still; ``successor_ready`` is set once the next operator serves (or
    there is none), and the held offers are then declined, which makes LiveKit offer them to
    the next worker.
    """

    def __init__(self) -> None:
        self.active = False
        self.successor_ready = asyncio.Event()
