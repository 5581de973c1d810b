"""Forwarding Python log records to the operator as ``LogRecord`` messages.

Records are converted on the thread that logs them (the RTC SDK logs from its own thread)
and kept in a bounded buffer that the stream to the operator drains while it is attached.
On overflow the oldest records are dropped and counted; the count is reported in a record of
its own when the buffer is drained again.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import traceback
from collections.abc import Callable

from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, now_us, pb

# A RunnerMessage wraps the LogRecord in a tag and a length: keep well clear of the limit.
MAX_LOG_RECORD_BYTES = MAX_MESSAGE_BYTES - 1024
DEFAULT_MAX_RECORDS = 1000
DEFAULT_MAX_BUFFER_BYTES = 16 * 1024 * 1024

# Records below INFO from these libraries stay in the pod log only: forwarding them would make
# the stream (grpc) or the SDK's own transport chatter generate traffic about itself.
INTERNAL_LOGGER_PREFIXES = ("grpc", "livekit", "asyncio", "hpack", "h2")

TRUNCATION_MARK = "…[truncated]"

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_LEVELS: tuple[tuple[int, pb.LogLevel.ValueType], ...] = (
    (logging.CRITICAL, pb.LOG_LEVEL_CRITICAL),
    (logging.ERROR, pb.LOG_LEVEL_ERROR),
    (logging.WARNING, pb.LOG_LEVEL_WARNING),
    (logging.INFO, pb.LOG_LEVEL_INFO),
)

STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def pb_level(levelno: int) -> pb.LogLevel.ValueType:
    """The protocol level of a Python level (rounded down; anything below INFO is DEBUG)."""
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return pb.LOG_LEVEL_DEBUG


def record_extra(record: logging.LogRecord) -> dict[str, str]:
    """The attributes a caller added to the record (``extra=...``), as strings."""
    extra: dict[str, str] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRIBUTES or key.startswith("_"):
            continue
        try:
            extra[key] = str(value)
        except Exception:  # a __str__ that fails must not lose the record
            extra[key] = f"<unprintable {type(value).__name__}>"
    return extra


def record_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-args: keep what we have
        return f"{record.msg!s} (args: {record.args!r})"


def record_exception(record: logging.LogRecord) -> str:
    parts: list[str] = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def record_to_pb(record: logging.LogRecord, max_bytes: int = MAX_LOG_RECORD_BYTES) -> pb.LogRecord:
    """Convert a Python log record; the result never serializes to more than ``max_bytes``."""
    level = pb_level(record.levelno)
    timestamp_us = int(record.created * 1_000_000)
    texts = (record.name, record_message(record), record_exception(record))
    extra = record_extra(record)
    try:
        out = _build(level, timestamp_us, *texts, extra)
    except ValueError:  # text that is not valid Unicode (lone surrogates): replace what cannot be encoded
        logger, message, exception = (_valid_text(t) for t in texts)
        clean_extra = {_valid_text(k): _valid_text(v) for k, v in extra.items()}
        out = _build(level, timestamp_us, logger, message, exception, clean_extra)
    return fit_log_record(out, max_bytes)


def _build(
    level: pb.LogLevel.ValueType,
    timestamp_us: int,
    logger: str,
    message: str,
    exception: str,
    extra: dict[str, str],
) -> pb.LogRecord:
    out = pb.LogRecord(
        level=level, logger=logger, message=message, exception=exception, timestamp_us=timestamp_us
    )
    out.extra.update(extra)
    return out


def _valid_text(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``max_bytes``."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max(0, max_bytes)].decode("utf-8", "ignore")


def fit_log_record(record: pb.LogRecord, max_bytes: int) -> pb.LogRecord:
    """Shrink ``record`` in place (largest text field first) until it serializes to ``max_bytes``."""
    mark_len = len(TRUNCATION_MARK.encode())
    excess = record.ByteSize() - max_bytes
    while excess > 0:
        fields: list[tuple[int, str, str]] = [
            (len(record.message.encode("utf-8")), "message", ""),
            (len(record.exception.encode("utf-8")), "exception", ""),
            (len(record.logger.encode("utf-8")), "logger", ""),
        ]
        fields += [(len(v.encode("utf-8")), "extra", k) for k, v in record.extra.items()]
        size, name, key = max(fields)
        if size == 0:
            break
        value = record.extra[key] if name == "extra" else getattr(record, name)
        keep = size - excess - mark_len - 8
        shorter = truncate_utf8(value, keep) + TRUNCATION_MARK if keep > 0 else ""
        if name == "extra":
            record.extra[key] = shorter
        else:
            setattr(record, name, shorter)
        excess = record.ByteSize() - max_bytes
    if excess > 0:  # only keys are left: a huge number of extra attributes
        record.extra.clear()
        record.extra["truncated"] = "extra attributes dropped: too large"
    return record


def dropped_records_notice(count: int) -> pb.LogRecord:
    record = pb.LogRecord(
        level=pb.LOG_LEVEL_WARNING,
        logger=__name__,
        message=f"{count} log records were dropped (buffer full while detached from the operator or slow)",
        timestamp_us=now_us(),
    )
    record.extra["dropped"] = str(count)
    return record


class LogBuffer:
    """A bounded FIFO of records, safe to fill from any thread; drops the oldest when full."""

    def __init__(
        self, max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: collections.deque[tuple[pb.LogRecord, int]] = collections.deque()
        self._bytes = 0
        self._dropped = 0
        self._lock = threading.Lock()
        self._notify: Callable[[], None] | None = None

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        """``notify`` is called (from the putting thread) after each put; it must be thread-safe."""
        self._notify = notify

    def put(self, record: pb.LogRecord) -> None:
        size = record.ByteSize()
        with self._lock:
            self._records.append((record, size))
            self._bytes += size
            while len(self._records) > self.max_records or (
                self._bytes > self.max_bytes and len(self._records) > 1
            ):
                _, dropped_size = self._records.popleft()
                self._bytes -= dropped_size
                self._dropped += 1
        notify = self._notify
        if notify is not None:
            notify()

    def take(self) -> pb.LogRecord | None:
        """The next record to send: a notice of dropped records first, if any were dropped."""
        with self._lock:
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return dropped_records_notice(count)
            if not self._records:
                return None
            record, size = self._records.popleft()
            self._bytes -= size
            return record

    @property
    def dropped(self) -> int:
        """Records dropped since the last notice was taken."""
        with self._lock:
            return self._dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._records) + (1 if self._dropped else 0)


class LogForwarder(logging.Handler):
    """A handler that turns records into ``LogRecord`` messages in a :class:`LogBuffer`."""

    def __init__(self, buffer: LogBuffer, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.buffer = buffer
        self._local = threading.local()

    def forwardable(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        return not record.name.startswith(INTERNAL_LOGGER_PREFIXES)

    def emit(self, record: logging.LogRecord) -> None:
        # Anything logged while this thread is already inside emit (by the conversion, the
        # buffer's wake-up or a library they call) is not forwarded: no feedback loop.
        if getattr(self._local, "busy", False) or not self.forwardable(record):
            return
        self._local.busy = True
        try:
            self.buffer.put(record_to_pb(record))
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False


def setup_logging(level: int, buffer: LogBuffer) -> list[logging.Handler]:
    """Root logger at ``level``, to stderr (the pod's log) and to the operator through ``buffer``."""
    root = logging.getLogger()
    root.setLevel(level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(STDERR_FORMAT))
    forwarder = LogForwarder(buffer)
    handlers: list[logging.Handler] = [stderr, forwarder]
    for handler in handlers:
        root.addHandler(handler)
    return handlers


def teardown_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
        handler.flush()
        handler.close()
