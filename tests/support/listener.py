"""A TCP port that counts who connects to it: where a forged or foreign URL points."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from devenv.procs import free_port


class Listener:
    """Counts the connections it accepts (and closes them at once)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Listener]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()
