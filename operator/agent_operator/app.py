"""The operator process: kopf with our handlers, plus /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import logging

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_operator.runtime import OperatorConfig

log = logging.getLogger("agent_operator")


def health_app(ready: asyncio.Event) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")  # the event loop answers: the process is alive

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            return web.Response(text="ready")
        return web.Response(status=503, text="starting")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def run_operator(config: OperatorConfig, namespaces: list[str], metrics_bind: str) -> None:
    import agent_operator.handlers  # noqa: F401 - registers the kopf handlers

    ready = asyncio.Event()
    host, _, port = metrics_bind.rpartition(":")
    runner = web.AppRunner(health_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    log.info("metrics and probes on %s", metrics_bind)
    try:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,  # one active replica; see README (no peering, no leader election yet)
            memo=kopf.Memo(config=config),
            ready_flag=ready,
        )
    finally:
        await runner.cleanup()
