"""Async Kubernetes clients for tests, and small waiting helpers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kubernetes_asyncio import client, config

T = TypeVar("T")


async def api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


async def create_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str] | None = None) -> str:
    """A namespace whose default ServiceAccount exists (pods are refused until it does)."""
    await core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})

    async def default_sa() -> bool:
        await core.read_namespaced_service_account("default", name)
        return True

    await eventually(default_sa, 30, f"default ServiceAccount in {name}")
    return name


def process_gone(pid: int) -> Callable[[], Awaitable[bool]]:
    """A probe for `eventually`: true once process ``pid`` no longer exists."""

    async def probe() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return probe


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Await ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
            if result is not None and result is not False:
                return result
        except Exception as exc:  # the probe failing is a reason to keep waiting
            last_exc = exc
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f": {last_exc!r}" if last_exc else "")
    )
