"""Python log records → LogRecord messages: conversion, size limit, bounded buffer, recursion guard."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from agent_jobrunner.logforward import (
    MAX_LOG_RECORD_BYTES,
    TRUNCATION_MARK,
    LogBuffer,
    LogForwarder,
    fit_log_record,
    pb_level,
    record_to_pb,
    truncate_utf8,
)
from agent_jobrunner.protocol import MAX_MESSAGE_BYTES, pb

pytestmark = pytest.mark.unit


def make_record(
    msg: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    level: int = logging.INFO,
    name: str = "my.agent",
    extra: dict[str, object] | None = None,
    exc_info: bool = False,
) -> logging.LogRecord:
    info = None
    if exc_info:
        try:
            raise KeyError("missing")
        except KeyError:
            info = sys.exc_info()
    record = logging.LogRecord(name, level, __file__, 10, msg, args, info)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize(
    ("levelno", "level"),
    [
        (logging.DEBUG, pb.LOG_LEVEL_DEBUG),
        (5, pb.LOG_LEVEL_DEBUG),
        (logging.INFO, pb.LOG_LEVEL_INFO),
        (25, pb.LOG_LEVEL_INFO),
        (logging.WARNING, pb.LOG_LEVEL_WARNING),
        (logging.ERROR, pb.LOG_LEVEL_ERROR),
        (logging.CRITICAL, pb.LOG_LEVEL_CRITICAL),
        (60, pb.LOG_LEVEL_CRITICAL),
    ],
)
def test_levels(levelno: int, level: pb.LogLevel.ValueType) -> None:
    assert pb_level(levelno) == level


def test_record_fields() -> None:
    record = make_record(extra={"job_id": "AJ_1", "count": 3, "_private": "no"})
    out = record_to_pb(record)
    assert out.level == pb.LOG_LEVEL_INFO
    assert out.logger == "my.agent"
    assert out.message == "hello world"
    assert out.timestamp_us == int(record.created * 1_000_000)
    assert dict(out.extra) == {"job_id": "AJ_1", "count": "3"}
    assert out.exception == ""


def test_exception_is_formatted() -> None:
    out = record_to_pb(make_record(level=logging.ERROR, exc_info=True))
    assert out.exception.startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in out.exception


def test_bad_format_arguments_do_not_lose_the_record() -> None:
    out = record_to_pb(make_record(msg="%d apples", args=("many",)))
    assert "%d apples" in out.message
    assert "many" in out.message


def test_unprintable_extra_and_invalid_unicode() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    out = record_to_pb(make_record(msg="bad \udc80 text", args=(), extra={"thing": Broken(), "s": "\udcff"}))
    assert out.message == "bad ? text"
    assert out.extra["thing"] == "<unprintable Broken>"
    assert out.extra["s"] == "?"


def test_huge_message_is_truncated_to_fit_a_message() -> None:
    out = record_to_pb(make_record(msg="x" * (3 * MAX_MESSAGE_BYTES), args=()))
    assert out.ByteSize() <= MAX_LOG_RECORD_BYTES
    assert pb.RunnerMessage(log=out).ByteSize() <= MAX_MESSAGE_BYTES
    assert out.message.endswith(TRUNCATION_MARK)
    assert len(out.message) > MAX_LOG_RECORD_BYTES // 2  # most of it is kept


def test_truncation_shrinks_the_largest_fields_first() -> None:
    record = pb.LogRecord(logger="l", message="m" * 5000, exception="e" * 300)
    record.extra["big"] = "b" * 3000
    record.extra["small"] = "s"
    fit_log_record(record, 4000)
    assert record.ByteSize() <= 4000
    assert record.exception == "e" * 300
    assert record.extra["small"] == "s"
    assert record.message.endswith(TRUNCATION_MARK)


def test_truncation_with_many_large_fields() -> None:
    record = pb.LogRecord(logger="l" * 2000, message="m" * 2000, exception="e" * 2000)
    for i in range(50):
        record.extra[f"k{i}"] = "v" * 500
    fit_log_record(record, 1000)
    assert record.ByteSize() <= 1000


def test_truncation_keeps_whole_utf8_characters() -> None:
    record = pb.LogRecord(message="é" * 10_000)
    fit_log_record(record, 1000)
    assert record.ByteSize() <= 1000
    assert set(record.message.removesuffix(TRUNCATION_MARK)) == {"é"}
    assert truncate_utf8("aé", 2) == "a"
    assert truncate_utf8("aé", 3) == "aé"


def test_small_records_are_untouched() -> None:
    record = pb.LogRecord(message="short")
    assert fit_log_record(record, 1000).message == "short"


def test_buffer_is_fifo() -> None:
    buffer = LogBuffer(max_records=10)
    for i in range(3):
        buffer.put(pb.LogRecord(message=str(i)))
    assert len(buffer) == 3
    taken = [buffer.take() for _ in range(4)]
    assert [r.message if r else None for r in taken] == ["0", "1", "2", None]


def test_overflow_drops_the_oldest_and_reports_the_count_first() -> None:
    buffer = LogBuffer(max_records=3)
    for i in range(10):
        buffer.put(pb.LogRecord(message=str(i)))
    assert buffer.dropped == 7
    notice = buffer.take()
    assert notice is not None
    assert notice.level == pb.LOG_LEVEL_WARNING
    assert notice.message.startswith("7 log records were dropped")
    assert notice.extra["dropped"] == "7"
    rest = [buffer.take() for _ in range(3)]
    assert [r.message for r in rest if r] == ["7", "8", "9"]
    assert buffer.take() is None
    assert buffer.dropped == 0


def test_buffer_is_bounded_in_bytes_too() -> None:
    buffer = LogBuffer(max_records=1000, max_bytes=10_000)
    for _ in range(10):
        buffer.put(pb.LogRecord(message="x" * 3000))
    assert buffer.dropped == 7
    assert len(buffer) == 3 + 1  # the records kept and the notice


def test_buffer_notifies_on_put() -> None:
    calls: list[int] = []
    buffer = LogBuffer()
    buffer.set_notify(lambda: calls.append(1))
    buffer.put(pb.LogRecord(message="a"))
    assert calls == [1]


def test_forwarder_from_many_threads() -> None:
    buffer = LogBuffer(max_records=100)
    forwarder = LogForwarder(buffer)

    def spam(n: int) -> None:
        for i in range(200):
            forwarder.handle(make_record(msg=f"t{n} {i}", args=()))

    threads = [threading.Thread(target=spam, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    notice = buffer.take()
    assert notice is not None
    assert notice.extra["dropped"] == str(800 - 100)
    assert len(buffer) == 100


def test_forwarder_drops_internal_debug_chatter_only() -> None:
    buffer = LogBuffer()
    forwarder = LogForwarder(buffer)
    forwarder.handle(make_record(name="grpc._cython.cygrpc", level=logging.DEBUG))
    forwarder.handle(make_record(name="livekit", level=logging.DEBUG))
    forwarder.handle(make_record(name="asyncio", level=logging.DEBUG))
    forwarder.handle(make_record(name="livekit", level=logging.WARNING, msg="kept", args=()))
    forwarder.handle(make_record(name="my.agent", level=logging.DEBUG, msg="mine", args=()))
    taken = [buffer.take() for _ in range(3)]
    assert [r.message for r in taken if r] == ["kept", "mine"]


def test_forwarder_does_not_forward_what_is_logged_while_forwarding() -> None:
    buffer = LogBuffer()
    forwarder = LogForwarder(buffer)
    logger = logging.getLogger("test.recursion")
    logger.propagate = False
    logger.addHandler(forwarder)
    logger.setLevel(logging.DEBUG)
    try:
        # the buffer's wake-up logs (as a library it calls might): no feedback loop
        buffer.set_notify(lambda: logger.info("notified"))
        logger.info("first")
        assert [r.message for r in (buffer.take(), buffer.take()) if r] == ["first"]
    finally:
        logger.removeHandler(forwarder)
        logger.propagate = True
