"""One attached runner stream: writes, pings, and the reading loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agent_jobrunner.protocol import now_us, pb
from agent_operator.supervisor.heartbeat import HeartbeatMonitor
from agent_operator.supervisor.types import RunnerBinding

log = logging.getLogger("agent_operator.supervisor")


class SessionClosed(Exception):
    """Writing to a stream that has ended."""


class RunnerSession:
    """The operator's end of one ``Attach`` stream, after the runner proved who it is."""

    def __init__(
        self,
        session_id: str,
        binding: RunnerBinding,
        hello: pb.Hello,
        context: Any,
        clock: Callable[[], float],
    ) -> None:
        self.session_id = session_id
        self.binding = binding
        self.hello = hello
        self.idle = hello.state != pb.RUNNER_STATE_RUNNING
        # the agent could not be loaded or prewarmed: the runner takes no job, its pod is replaced
        self.prewarm_error = ""
        if hello.state == pb.RUNNER_STATE_PREWARM_FAILED:
            self.idle = False
            self.prewarm_error = hello.prewarm_error or "the runner reported a failed prewarm"
        self.start_sent = False
        self._context = context
        self._clock = clock
        self.monitor = HeartbeatMonitor(binding.heartbeat, clock())
        self._write_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self.close_code: Any = None
        self.close_details = ""

    @property
    def pod_uid(self) -> str:
        return self.binding.pod.uid

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def send(self, msg: pb.SupervisorMessage) -> None:
        if self._closed.is_set():
            raise SessionClosed(f"stream of {self.binding.pod} is closed")
        async with self._write_lock:
            try:
                await self._context.write(msg)
            except Exception as exc:  # grpc raises several types once the RPC is over
                self.close(None, f"write failed: {exc}")
                raise SessionClosed(f"stream of {self.binding.pod} is closed: {exc}") from exc

    def close(self, code: Any, details: str) -> None:
        """End the stream (from any task); ``code`` None ends it with OK."""
        if not self._closed.is_set():
            self.close_code = code
            self.close_details = details
            self._closed.set()

    async def serve(
        self,
        requests: AsyncIterator[pb.RunnerMessage],
        on_message: Callable[[RunnerSession, pb.RunnerMessage], Awaitable[None]],
        on_unresponsive: Callable[[RunnerSession], Awaitable[None]],
    ) -> str:
        """Read messages and ping until the stream ends; returns why it ended."""
        reader = asyncio.create_task(self._read(requests, on_message), name=f"read {self.binding.pod}")
        pinger = asyncio.create_task(self._ping(on_unresponsive), name=f"ping {self.binding.pod}")
        closer = asyncio.create_task(self._closed.wait(), name=f"close {self.binding.pod}")
        try:
            done, _ = await asyncio.wait({reader, pinger, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pinger, closer):
                task.cancel()
            results = await asyncio.gather(reader, pinger, closer, return_exceptions=True)
        self._closed.set()
        if reader in done:
            exc = results[0]
            if isinstance(exc, BaseException) and not isinstance(exc, asyncio.CancelledError):
                return f"stream error: {type(exc).__name__}: {exc}"
            return "runner closed the stream"
        return self.close_details or "closed"

    async def _read(
        self,
        requests: AsyncIterator[pb.RunnerMessage],
        on_message: Callable[[RunnerSession, pb.RunnerMessage], Awaitable[None]],
    ) -> None:
        async for msg in requests:
            await on_message(self, msg)

    async def _ping(self, on_unresponsive: Callable[[RunnerSession], Awaitable[None]]) -> None:
        settings = self.binding.heartbeat
        while not self._closed.is_set():
            now = self._clock()
            if self.monitor.unresponsive(now):
                await on_unresponsive(self)
                return
            ts = now_us()
            self.monitor.ping_sent(ts, now)
            with contextlib.suppress(SessionClosed):
                await self.send(pb.SupervisorMessage(ping=pb.Ping(timestamp_us=ts)))
            # wake at the next ping, or exactly when the timeout would pass if sooner
            deadline = self.monitor.last_pong + settings.ping_timeout - self._clock()
            await asyncio.sleep(max(0.0, min(settings.ping_interval, deadline + 0.001)))
