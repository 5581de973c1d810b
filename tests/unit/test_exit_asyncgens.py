"""At exit, kopf's watch stream left open (the stop caught it waiting on its pause toggle) fails
to close when asyncio closes it ("generator didn't stop after athrow()", seen in a fresh-clone
run of the handover test): the operator says so as a warning, and any other generator's failure
still reaches asyncio's handler as an error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agent_operator.app import _kopf_watch_exit_handler

pytestmark = pytest.mark.unit

# a generator that, like kopf's, does not stop when closed; compiled as kopf's file
SOURCE = """
async def {name}():
    try:
        yield 1
    finally:
        yield 2
"""


def misbehaving(name: str, filename: str) -> Any:
    scope: dict[str, Any] = {}
    exec(compile(SOURCE.format(name=name), filename, "exec"), scope)  # noqa: S102
    return scope[name]


def run_leaving_open(generator_fn: Any) -> None:
    left_open: list[Any] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(_kopf_watch_exit_handler)
        agen = generator_fn()
        left_open.append(agen)  # still referenced: closed by asyncio.run at its end
        await agen.__anext__()

    asyncio.run(main())


def test_kopfs_watch_stream_failing_to_close_at_exit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    watch = misbehaving("infinite_watch", "/venv/site-packages/kopf/_cogs/clients/watching.py")
    with caplog.at_level(logging.DEBUG):
        run_leaving_open(watch)
    levels = {(r.name, r.levelname) for r in caplog.records}
    assert ("agent_operator", "WARNING") in levels
    assert "kopf's watch stream did not close cleanly at exit" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_any_other_generator_failing_to_close_is_still_an_error(caplog: pytest.LogCaptureFixture) -> None:
    ours = misbehaving("infinite_watch", "/src/agent_operator/watching.py")
    with caplog.at_level(logging.DEBUG):
        run_leaving_open(ours)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert errors[0].name == "asyncio"
    assert "kopf's watch stream" not in caplog.text
