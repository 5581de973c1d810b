"""Prewarming an agent once per pod, before its runner reports idle: a warm pod has the
agent's models loaded when its job comes.

The native runtime's hook is a function named ``prewarm`` beside the entrypoint, in the same
module: ``async def prewarm(userdata: dict)`` (or a plain ``def``, run in a thread) fills
``userdata``, which the job gets as ``ctx.userdata``, as livekit-agents' ``setup_fnc`` fills
``proc.userdata``. It has ``PREWARM_TIMEOUT_SECONDS``; one that raises or outlasts it is the
pod's prewarm failure (the operator replaces the pod, with backoff, and says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

PREWARM_TIMEOUT_SECONDS = 60.0


class PrewarmError(Exception):
    """The prewarm raised, or did not finish in time (the message says which)."""


async def run_in_thread(call: Callable[[], Any], timeout: float, what: str) -> None:
    """Run ``call()`` synchronously, with no event loop running in its thread. A daemon
    thread, so a prewarm that hangs past ``timeout`` neither stalls the runner's loop nor keeps
    the process from exiting."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            call()
        except BaseException as err:
            error = err
        # a closed loop: the runner gave up on this prewarm and exited
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="prewarm", daemon=True).start()
    await _within(asyncio.shield(done), timeout, what)


async def _within(work: Awaitable[Any], timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise PrewarmError(f"{what} did not finish within {timeout:g}s") from None
    except Exception as err:
        raise PrewarmError(f"{what} raised {type(err).__name__}: {err}") from err


async def native_prewarm(module: ModuleType, timeout: float = PREWARM_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Run the module's ``prewarm(userdata)``, if it has one; the userdata it filled."""
    userdata: dict[str, Any] = {}
    hook = getattr(module, "prewarm", None)
    if hook is None:
        return userdata
    what = f"the prewarm ({module.__name__}.prewarm)"
    if not callable(hook):
        raise PrewarmError(f"{module.__name__}.prewarm is not a function (want: def prewarm(userdata))")
    loop = asyncio.get_running_loop()
    started = loop.time()
    if inspect.iscoroutinefunction(hook):
        await _within(hook(userdata), timeout, what)
    else:
        await run_in_thread(lambda: hook(userdata), timeout, what)
    logger.info("prewarmed the agent in %.2fs", loop.time() - started)
    return userdata
