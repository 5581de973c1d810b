"""One-time work a pod's first job would otherwise pay, done before the runner reports idle.

A runner serves one job, so whatever its job does for the first time in the process is on
that call's start. Two such costs are taken ahead, in a thread (the runner's loop goes on):

- the LiveKit native runtime: ``livekit.rtc`` maps its library (``dlopen``) and starts its
  threads on the first ``Room`` use, about 30 ms inside ``ctx.connect()`` otherwise;
- for a livekit-agents agent, that framework's own warm-up module (``livekit.agents.ipc._preload``:
  ``av``, the OpenAI SDK's resources, the first HTTP client, up to half a second), which its
  worker runs in every job process before a job comes. Its local-inference step is left out
  unless ``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE`` is set in the pod: there it loads the
  end-of-turn weights (about 250 MB) for processes that share them, and a pod shares them with
  nobody.

A step that fails is logged and skipped: the job's own first use reports the real error.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

LKA_PRELOAD_MODULE = "livekit.agents.ipc._preload"
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


def rtc_runtime() -> None:
    """The native library mapped and its runtime started (``FfiClient.instance``)."""
    from livekit.rtc._ffi_client import FfiClient

    FfiClient.instance  # noqa: B018 (creating it is the point)


def livekit_agents_preload() -> None:
    """livekit-agents' warm-up module, without the shared local-inference models unless asked."""
    asked = PRELOAD_LOCAL_INFERENCE in os.environ
    if not asked:
        os.environ[PRELOAD_LOCAL_INFERENCE] = "0"  # read once, while the module is imported
    try:
        importlib.import_module(LKA_PRELOAD_MODULE)
    except ModuleNotFoundError as err:
        if err.name != LKA_PRELOAD_MODULE:
            raise
        logger.debug("this livekit-agents release has no %s", LKA_PRELOAD_MODULE)
    finally:
        if not asked:
            os.environ.pop(PRELOAD_LOCAL_INFERENCE, None)


def steps(runtime: str) -> list[tuple[str, Callable[[], None]]]:
    """What to warm up for ``runtime`` (``native`` or ``livekit-agents``), in order."""
    found: list[tuple[str, Callable[[], None]]] = []
    if runtime == "livekit-agents":
        found.append(("livekit-agents' preload", livekit_agents_preload))
    found.append(("the livekit-rtc runtime", rtc_runtime))
    return found


async def warm_up(runtime: str) -> None:
    """Run :func:`steps` in a thread; each one's failure is logged, not raised."""
    for name, step in steps(runtime):
        started = time.perf_counter()
        try:
            await asyncio.to_thread(step)
        except Exception as err:
            logger.warning("could not warm up %s: %s: %s", name, type(err).__name__, err)
            continue
        logger.debug("warmed up %s in %.0f ms", name, (time.perf_counter() - started) * 1000)
