"""What the OpenAI-compatible providers share: the endpoint, the key, one HTTP session, errors."""

from __future__ import annotations

import dataclasses
import os

import aiohttp

from agent_jobrunner.voice.interfaces import ProviderError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class APIStatusError(ProviderError):
    """The service answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class APIConnectionError(ProviderError):
    """The request did not get a whole answer (refused, reset, timed out, cut off)."""


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """How long a request may wait, in seconds: ``connect`` for a connection, ``read`` for the
    next bytes of the answer (the first ones included). No limit on the whole answer: a long
    reply streamed steadily is never cut, a server that stalls is given up after ``read``."""

    connect: float = 10.0
    read: float = 30.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ValueError(f"timeouts must be positive: {self}")

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, connect=self.connect, sock_read=self.read)


class OpenAIClient:
    """``base_url`` is the API root including ``/v1`` (OpenAI, Groq, vLLM, Ollama all have one).

    The key defaults to ``OPENAI_API_KEY``; a local server may need none.
    """

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeouts: Timeouts | None = None
    ) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeouts = timeouts or Timeouts()
        self.timeout = self.timeouts.client_timeout()
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status >= 400:
        body = await response.text(errors="replace")
        raise APIStatusError(response.status, body)
