"""A TCP port that counts who connects to it: where a forged or foreign URL points.

It listens on the node IP, where a job pod's container (or the operator) would reach it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from devenv.procs import free_port
from tests.support import environments


class Listener:
    """Counts the connections it accepts (and closes them at once)."""

    def __init__(self) -> None:
        self.host = environments.node_ip()
        self.port = free_port()
        self.connections = 0

    @property
    def url(self) -> str:
        """A LiveKit URL that points here."""
        return f"ws://{self.host}:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Listener]:
        server = await asyncio.start_server(self._accept, self.host, self.port)
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()
