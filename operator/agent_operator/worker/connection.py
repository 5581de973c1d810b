"""A worker connection to a LiveKit server's ``/agent`` endpoint.

``run()`` keeps the worker registered until cancelled: it connects with a token carrying
the agent grant, sends ``RegisterWorkerRequest``, reports jobs still running
(``MigrateJobRequest``; the open-source server ignores it, so nothing relies on it), sends
``UpdateWorkerStatus`` periodically, and reconnects with capped exponential backoff.
Availability requests are answered in the reader loop itself, from a synchronous decision:
the server waits only a few seconds and a slow answer loses the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlparse, urlunparse

import aiohttp
from livekit import api
from livekit.protocol import agent, models

from agent_operator import __version__
from agent_operator.tasks import BackgroundTasks, run_with_companions

log = logging.getLogger("agent_operator.worker")

STATUS_INTERVAL = 2.5  # the status is sent at least this often
STATUS_CHECK_INTERVAL = 0.1  # and within this long of a change (a job started or ended)
# no receive timeout (the server may be quiet for long); built at import, so an aiohttp without
# ClientWSTimeout (< 3.11) fails every test that imports the worker, the lowest-versions run too
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5)


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    url: str
    api_key: str
    api_secret: str = dataclasses.field(repr=False)
    agent_name: str = ""
    worker_type: int = agent.JT_ROOM
    namespace: str = ""
    permissions: models.ParticipantPermission = dataclasses.field(
        default_factory=lambda: models.ParticipantPermission(
            can_publish=True, can_subscribe=True, can_publish_data=True, agent=True
        )
    )
    version: str = __version__

    def agent_url(self) -> str:
        parsed = urlparse(self.url)
        scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
        path = parsed.path.rstrip("/") + "/agent"
        return urlunparse((scheme, parsed.netloc, path, "", "", ""))


class WorkerHandler(Protocol):
    def availability(self, request: agent.AvailabilityRequest) -> agent.AvailabilityResponse | None:
        """Decide at once (no I/O); the answer goes straight back to the server. None: the
        handler answers later, with ``WorkerConnection.answer``."""
        ...

    async def assignment(self, assignment: agent.JobAssignment) -> None: ...

    async def termination(self, termination: agent.JobTermination) -> None: ...

    async def registered(self, worker_id: str) -> None: ...

    async def disconnected(self, reason: str) -> None: ...

    def status(self) -> agent.UpdateWorkerStatus:
        """Current load, status and job count."""
        ...

    def running_job_ids(self) -> list[str]: ...


class RegistrationError(Exception):
    pass


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 15.0) -> float:
    """Full-jitter exponential backoff (pure)."""
    return random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - jitter, not crypto


class WorkerConnection:
    def __init__(
        self,
        options: WorkerOptions,
        handler: WorkerHandler,
        fields: dict[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.handler = handler
        self.fields = fields or {}
        self.worker_id = ""
        self.reconnects = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._sleep = sleep
        self._handler_tasks = BackgroundTasks(log, "worker message handler", self.fields)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and bool(self.worker_id)

    async def run(self) -> None:
        """Stay registered until cancelled."""
        attempt = 0
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self._session(http)
                    attempt = 0
                    reason = "server closed the connection"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                finally:
                    await self._cleanup()
                self.reconnects += 1
                await self.handler.disconnected(reason)
                delay = backoff_delay(attempt)
                attempt += 1
                log.warning(
                    "worker connection lost (%s); reconnecting in %.1fs", reason, delay, extra=self.fields
                )
                await self._sleep(delay)

    async def _session(self, http: aiohttp.ClientSession) -> None:
        token = (
            api.AccessToken(self.options.api_key, self.options.api_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        ws = await http.ws_connect(
            self.options.agent_url(),
            headers={"Authorization": f"Bearer {token}"},
            params={"protocol": "1"},
            heartbeat=30,
            timeout=WS_TIMEOUT,
        )
        self._ws = ws
        await self._send(agent.WorkerMessage(register=self._register_request()))
        first = await asyncio.wait_for(ws.receive(), timeout=15)
        msg = _parse(first)
        if msg is None or msg.WhichOneof("message") != "register":
            raise RegistrationError(f"expected RegisterWorkerResponse, got {first.type}")
        self.worker_id = msg.register.worker_id
        log.info("worker registered as %s", self.worker_id, extra=self.fields)
        await self.handler.registered(self.worker_id)
        running = self.handler.running_job_ids()
        if running:
            await self._send(agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=running)))
        # a status loop that dies ends the session (logged, then a reconnect): LiveKit would
        # otherwise route by the last status it got, for as long as the connection lasts
        await run_with_companions(
            self._read(ws), {"worker status updates": self._status_loop()}, log, self.fields
        )

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            msg = _parse(frame)
            if msg is None:
                if frame.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return
                continue
            await self._dispatch(msg)

    def _register_request(self) -> agent.RegisterWorkerRequest:
        return agent.RegisterWorkerRequest(
            type=self.options.worker_type,  # type: ignore[arg-type]
            agent_name=self.options.agent_name,
            version=self.options.version,
            namespace=self.options.namespace,
            allowed_permissions=self.options.permissions,
        )

    async def _dispatch(self, msg: agent.ServerMessage) -> None:
        kind = msg.WhichOneof("message")
        if kind == "availability":
            try:
                response = self.handler.availability(msg.availability)
            except Exception:  # one offer's failure declines that offer, never the connection
                job = msg.availability.job
                log.exception(
                    "declined job: answering its offer failed",
                    extra={**self.fields, "job_id": job.id, "room": job.room.name},
                )
                response = agent.AvailabilityResponse(job_id=job.id, available=False)
            if response is not None:
                await self._send(agent.WorkerMessage(availability=response))
        elif kind == "assignment":
            self._spawn(self.handler.assignment(msg.assignment))
        elif kind == "termination":
            self._spawn(self.handler.termination(msg.termination))
        elif kind == "go_away":
            log.info("server asked the worker to go away; reconnecting", extra=self.fields)
            if self._ws is not None:
                await self._ws.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._handler_tasks.spawn(coro)

    async def _status_loop(self) -> None:
        """Send the status when it changes (looked at every STATUS_CHECK_INTERVAL), and every
        STATUS_INTERVAL anyway. LiveKit routes by the last status it got: a slot freed at full
        capacity would otherwise be offered to no one for up to STATUS_INTERVAL."""
        last: agent.UpdateWorkerStatus | None = None
        sent_at = 0.0
        while True:
            status = self.handler.status()
            now = time.monotonic()
            if status != last or now - sent_at >= STATUS_INTERVAL:
                with contextlib.suppress(ConnectionError):
                    await self._send(agent.WorkerMessage(update_worker=status))
                last, sent_at = status, now
            await asyncio.sleep(STATUS_CHECK_INTERVAL)

    async def send_status(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(agent.WorkerMessage(update_worker=self.handler.status()))

    async def answer(self, response: agent.AvailabilityResponse) -> None:
        """A late answer to an availability request (the server waits up to 10 s)."""
        with contextlib.suppress(ConnectionError):
            await self._send(agent.WorkerMessage(availability=response))

    async def update_job(self, job_id: str, status: agent.JobStatus, error: str = "") -> bool:
        """Tell the server how a job ended (or that it runs); False if not connected."""
        update = agent.UpdateJobStatus(job_id=job_id, status=status, error=error)
        try:
            await self._send(agent.WorkerMessage(update_job=update))
        except ConnectionError:
            return False
        return True

    async def _send(self, msg: agent.WorkerMessage) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("worker is not connected")
        async with self._send_lock:
            await ws.send_bytes(msg.SerializeToString())

    async def _cleanup(self) -> None:
        self.worker_id = ""
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()

    async def close(self) -> None:
        """Wait for in-flight handler calls (use after cancelling ``run``)."""
        await self._handler_tasks.close()
        await self._cleanup()


def _parse(frame: aiohttp.WSMessage) -> agent.ServerMessage | None:
    if frame.type != aiohttp.WSMsgType.BINARY:
        return None
    msg = agent.ServerMessage()
    msg.ParseFromString(frame.data)
    return msg
