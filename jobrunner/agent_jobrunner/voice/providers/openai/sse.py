"""Server-sent events (text/event-stream), as chat completions stream them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator


@dataclasses.dataclass(frozen=True)
class ServerEvent:
    data: str
    event: str = "message"
    id: str = ""


class SSEDecoder:
    """Feed lines (without their line ending); an event comes out at each blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def line(self, line: str) -> ServerEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerEvent("\n".join(self._data), self._event or "message", self._id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        return None


async def events(lines: AsyncIterable[bytes]) -> AsyncIterator[ServerEvent]:
    """The events of a stream of raw lines (as ``aiohttp``'s ``response.content`` gives them)."""
    decoder = SSEDecoder()
    async for raw in lines:
        event = decoder.line(raw.decode("utf-8").rstrip("\r\n"))
        if event is not None:
            yield event
    last = decoder.line("")
    if last is not None:
        yield last
