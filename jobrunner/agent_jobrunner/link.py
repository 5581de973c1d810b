"""The runner's stream to the operator: dial, Hello/Welcome, send queue, receive, re-attach.

One :class:`OperatorLink` lives as long as the runner. It attaches (a fresh channel per
attempt, with capped exponential backoff between attempts), answers every ``Ping`` itself,
hands every other operator message to a callback, and sends what the runner queues: pongs
first, then control messages, then the job's latest checkpoint, then log records from the
:class:`LogBuffer`. Control messages queued while detached are sent after the next attach;
pongs are never carried over. A checkpoint is not queued: only the latest is kept, and it is
sent again after every attach (a new operator has it at once). It goes after the control
messages queued before it, so it never overtakes the job's start answer or status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from grpc import aio

from agent_jobrunner import __version__
from agent_jobrunner.backoff import Backoff
from agent_jobrunner.checkpoint import LatestCheckpoint
from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.link_channel import AttachError, describe, open_channel, read_credential
from agent_jobrunner.logforward import LogBuffer
from agent_jobrunner.protocol import PROTOCOL_VERSION, now_us, pb, pb_grpc

logger = logging.getLogger(__name__)

# How long to wait for Welcome after sending Hello.
WELCOME_TIMEOUT_SECONDS = 30.0
# A session that lasted this long was a success: the next failure starts the backoff over.
STABLE_SESSION_SECONDS = 10.0
# After we finished writing, how long the operator has to end the stream.
CLOSE_READ_TIMEOUT_SECONDS = 2.0
# Nothing heard for max(SILENCE_PINGS x ping interval, SILENCE_MIN_SECONDS): the stream is dead.
SILENCE_PINGS = 10
SILENCE_MIN_SECONDS = 15.0

# the state, the running job (state RUNNING) and the prewarm error (state PREWARM_FAILED)
HelloState = tuple["pb.RunnerState.ValueType", "pb.RunningJob | None", str]


class StreamSilent(Exception):
    """The operator sent nothing for much longer than its ping interval."""


class StreamFinished(Exception):
    """The operator ended the stream while a message was being written (a handover, a
    restart): the message goes out again on the next stream."""


def silence_limit_seconds(ping_interval_ms: int) -> float | None:
    """How long without any operator message means the stream is dead (None: no limit)."""
    if ping_interval_ms <= 0:
        return None
    return max(SILENCE_PINGS * ping_interval_ms / 1000.0, SILENCE_MIN_SECONDS)


def should_log_failure(failures: int) -> bool:
    """Log the first few consecutive attach failures and then every tenth (no log flood)."""
    return failures <= 3 or failures % 10 == 0


class OperatorLink:
    def __init__(
        self,
        config: RunnerConfig,
        *,
        hello_state: Callable[[], HelloState],
        on_message: Callable[[pb.SupervisorMessage], None],
        logs: LogBuffer,
        backoff: Backoff | None = None,
    ) -> None:
        self._config = config
        self._hello_state = hello_state
        self._on_message = on_message
        self._logs = logs
        self._backoff = backoff or Backoff()
        self._pongs: collections.deque[pb.RunnerMessage] = collections.deque()
        self._control: collections.deque[pb.RunnerMessage] = collections.deque()
        self.checkpoints = LatestCheckpoint()  # the job's latest, not a queue
        self._wake = asyncio.Event()
        self._attached = asyncio.Event()
        self._detached = asyncio.Event()
        self._detached.set()
        self._closing = False
        self._delivered = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._last_received = 0.0
        self._attached_at: float | None = None
        self.session_id = ""

    # ----------------------------------------------------------------------------- public

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._logs.set_notify(self._kick_threadsafe)
        self._task = asyncio.create_task(self._run(), name="operator-link")

    @property
    def attached(self) -> bool:
        return self._attached.is_set()

    async def wait_attached(self) -> None:
        await self._attached.wait()

    async def wait_detached(self) -> None:
        await self._detached.wait()

    def send(self, message: pb.RunnerMessage) -> None:
        """Queue a message; it is sent as soon as (or once again) the stream is attached."""
        self._control.append(message)
        self._kick()

    def send_checkpoint(self, message: pb.RunnerMessage) -> None:
        """Send this checkpoint in place of any not yet written; again after each re-attach."""
        self.checkpoints.put(message)
        self._kick()

    async def close(self, timeout: float, wait_for_attach: bool = True) -> bool:
        """Deliver what is queued, end the stream and stop; True if everything was delivered.

        Waits up to ``timeout`` seconds, including for a re-attach if the stream is down and
        ``wait_for_attach``.
        """
        self._closing = True
        self._kick()
        task = self._task
        if task is not None:
            if timeout > 0 and (self.attached or wait_for_attach):
                await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    logger.exception("the operator link failed")
        self._logs.set_notify(None)
        return self._delivered

    # ----------------------------------------------------------------------------- queue

    def _kick(self) -> None:
        self._wake.set()

    def _kick_threadsafe(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._kick()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the runner is exiting
                loop.call_soon_threadsafe(self._kick)

    def _next_outgoing(self) -> pb.RunnerMessage | None:
        if self._pongs:
            return self._pongs.popleft()
        if self._control:
            return self._control.popleft()
        checkpoint = self.checkpoints.take()
        if checkpoint is not None:
            return checkpoint
        record = self._logs.take()
        if record is not None:
            return pb.RunnerMessage(log=record)
        return None

    # ----------------------------------------------------------------------------- attach loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            error: BaseException | None = None
            try:
                await self._attach_and_pump(loop)
            except (AttachError, StreamSilent, StreamFinished, OSError) as err:
                error = err
            except aio.AioRpcError as err:
                error = err
            except Exception as err:
                logger.exception("unexpected error on the operator stream")
                error = err
            attached_at, self._attached_at = self._attached_at, None
            if self._closing and self._delivered:
                return
            if attached_at is not None:
                lasted = loop.time() - attached_at
                failures = 0
                if lasted >= STABLE_SESSION_SECONDS:
                    self._backoff.reset()
                logger.warning(
                    "detached from the operator after %.1fs: %s", lasted, describe(error) or "stream ended"
                )
            else:
                failures += 1
                if should_log_failure(failures):
                    logger.warning(
                        "could not attach to the operator at %s (attempt %d): %s",
                        self._config.operator_address,
                        failures,
                        describe(error),
                    )
            delay = self._backoff.next_delay()
            logger.debug("re-attaching in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _attach_and_pump(self, loop: asyncio.AbstractEventLoop) -> None:
        credential = await asyncio.to_thread(read_credential, self._config)
        channel = await open_channel(self._config)
        call: Any = None
        try:
            stub = pb_grpc.RunnerSupervisorStub(channel)
            call = stub.Attach()
            await call.write(pb.RunnerMessage(hello=self._hello(credential)))
            try:
                first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT_SECONDS)
            except TimeoutError:
                raise AttachError(f"no Welcome within {WELCOME_TIMEOUT_SECONDS:g}s") from None
            if first is aio.EOF:
                raise AttachError(f"the operator ended the stream before Welcome ({await call.code()})")
            if first.WhichOneof("message") != "welcome":
                raise AttachError(f"expected Welcome, got {first.WhichOneof('message')}")
            welcome: pb.Welcome = first.welcome
            self._attached_at = loop.time()
            self._on_attached(welcome, loop)
            try:
                await self._pump(call, welcome, loop)
            finally:
                self._on_detached()
        finally:
            if call is not None:
                call.cancel()
            await channel.close()

    def _hello(self, credential: str) -> pb.Hello:
        state, running_job, prewarm_error = self._hello_state()
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            pod_namespace=self._config.pod_namespace,
            pod_name=self._config.pod_name,
            pod_uid=self._config.pod_uid,
            credential=credential,
            state=state,
            runner_version=__version__,
            prewarm_error=prewarm_error,
        )
        if running_job is not None:
            hello.running_job.CopyFrom(running_job)
        return hello

    def _on_attached(self, welcome: pb.Welcome, loop: asyncio.AbstractEventLoop) -> None:
        self.session_id = welcome.session_id
        self._last_received = loop.time()
        self._pongs.clear()
        self.checkpoints.resend()
        self._detached.clear()
        self._attached.set()
        if welcome.protocol_version and welcome.protocol_version != PROTOCOL_VERSION:
            logger.warning(
                "the operator speaks protocol version %d, this runner %d",
                welcome.protocol_version,
                PROTOCOL_VERSION,
            )
        logger.info(
            "attached to the operator (session %s, ping interval %d ms)",
            welcome.session_id,
            welcome.ping_interval_ms,
        )
        self._kick()

    def _on_detached(self) -> None:
        self._pongs.clear()
        self._attached.clear()
        self._detached.set()

    # ----------------------------------------------------------------------------- one session

    async def _pump(self, call: Any, welcome: pb.Welcome, loop: asyncio.AbstractEventLoop) -> None:
        sender = asyncio.create_task(self._send_loop(call), name="operator-link-send")
        receiver = asyncio.create_task(self._receive_loop(call, loop), name="operator-link-receive")
        tasks = [sender, receiver]
        limit = silence_limit_seconds(welcome.ping_interval_ms)
        if limit is not None:
            tasks.append(asyncio.create_task(self._watch_silence(limit, loop), name="operator-link-watch"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if sender in done and not sender.cancelled() and sender.exception() is None:
                # we finished writing (closing): let the operator end the stream
                await asyncio.wait([receiver], timeout=CLOSE_READ_TIMEOUT_SECONDS)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._delivered:
            return
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _send_loop(self, call: Any) -> None:
        while True:
            message = self._next_outgoing()
            if message is None:
                if self._closing:
                    # everything queued is written; the operator may end the stream at once
                    self._delivered = True
                    await call.done_writing()
                    return
                self._wake.clear()
                message = self._next_outgoing()  # anything queued between the check and clear()
                if message is None:
                    await self._wake.wait()
                    continue
            try:
                await call.write(message)
            except (asyncio.InvalidStateError, aio.AioRpcError) as err:
                # not written: a control message (a job's status or end) goes out on the next
                # stream; a pong or a log record is not worth sending late; the latest
                # checkpoint goes out again after the next attach anyway
                if message.WhichOneof("message") not in ("pong", "log", "checkpoint"):
                    self._control.appendleft(message)
                raise StreamFinished(f"the stream ended while writing: {describe(err)}") from err

    async def _receive_loop(self, call: Any, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            message = await call.read()
            if message is aio.EOF:
                return
            self._last_received = loop.time()
            kind = message.WhichOneof("message")
            if kind == "ping":
                self._pongs.append(
                    pb.RunnerMessage(
                        pong=pb.Pong(ping_timestamp_us=message.ping.timestamp_us, timestamp_us=now_us())
                    )
                )
                self._kick()
            elif kind == "welcome":
                logger.warning("ignoring a second Welcome from the operator")
            elif kind is None:
                logger.warning("ignoring an empty (unknown) message from the operator")
            else:
                try:
                    self._on_message(message)
                except Exception:
                    logger.exception("error handling the operator's %s", kind)

    async def _watch_silence(self, limit: float, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            quiet = loop.time() - self._last_received
            if quiet >= limit:
                raise StreamSilent(f"nothing from the operator for {quiet:.1f}s")
            await asyncio.sleep(limit - quiet + 0.05)
