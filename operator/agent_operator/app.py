"""The operator process: kopf with our handlers, plus /metrics, /healthz and /readyz.

With leader election, the process first stands by until it holds the Lease, and on SIGTERM
it hands over to the next operator before kopf stops (``leadership``). Without it (one
process, e.g. the local demo), SIGTERM stops kopf at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

import kopf
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_operator import metrics
from agent_operator.kube.leader_label import LeaderPodLabel
from agent_operator.kube.lease import LeaderLease, LeaseLost
from agent_operator.kube.pods import brief
from agent_operator.leadership import ElectionConfig, announce_serving, expected_deployments, hand_over
from agent_operator.runtime import OperatorConfig, OperatorRuntime, kube_client
from agent_operator.tasks import BackgroundTasks

log = logging.getLogger("agent_operator")

LABEL_SETTLE_SECONDS = 2.0  # at exit: how long to try to take the leader label off this pod
LINGER_REPORT_SECONDS = 2.0  # after the stop: name the tasks still running (kopf waits for them)


class Probes:
    """What /readyz answers: a standby is ready (a rollout may go on and stop the old leader),
    once its pod no longer carries the leader label (a container restarted in place keeps
    it): a Ready pod with it would be sent runners it refuses."""

    def __init__(self) -> None:
        self.standby = False
        self.serving = asyncio.Event()  # kopf's ready flag
        self.label: LeaderPodLabel | None = None

    def ready(self) -> str | None:
        if self.serving.is_set():
            return "ready"
        if not self.standby or (self.label is not None and self.label.written is not False):
            return None
        return "standby"


def health_app(probes: Probes) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")  # the event loop answers: the process is alive

    async def readyz(_: web.Request) -> web.Response:
        state = probes.ready()
        if state is not None:
            return web.Response(text=state)
        return web.Response(status=503, text="starting")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def run_operator(
    config: OperatorConfig,
    namespaces: list[str],
    metrics_bind: str,
    election: ElectionConfig | None = None,
) -> int:
    """Run until stopped; the exit code (1 when leadership was lost to another operator)."""
    import agent_operator.handlers  # noqa: F401 - registers the kopf handlers

    probes = Probes()
    host, _, port = metrics_bind.rpartition(":")
    runner = web.AppRunner(health_app(probes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    log.info("metrics and probes on %s", metrics_bind)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lease: LeaderLease | None = None
    lease_api = None
    label: LeaderPodLabel | None = None
    label_task: asyncio.Task[None] | None = None
    try:
        if election is not None:
            lease_api = await kube_client(config.kubeconfig)
            lease = LeaderLease(
                lease_api, election.namespace, election.name, election.identity, election.lease_duration
            )
            if election.label_pod:
                label = LeaderPodLabel(lease_api, election.namespace, election.label_pod)
                label_task = asyncio.create_task(label.run())
                label.want(False)  # a container restarted in place keeps its pod's labels
                probes.label = label
            probes.standby = True
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            try:
                acquired = await _first(lease.acquire(), stop)
            except ApiException as exc:
                if exc.status not in (401, 403, 404):
                    raise
                # RBAC without leases, or a namespace that does not exist
                log.error("cannot use the leader Lease: %s %s", exc.status, exc.reason, extra=lease.fields)
                return 1
            if not acquired:
                log.info("stopped while standing by", extra=lease.fields)
                return 0
            probes.standby = False
            if label is not None:
                label.want(True)  # the runner Service now sends runner pods here
        metrics.LEADER.set(1)
        return await _serve(config, namespaces, probes, stop, lease, election, label)
    finally:
        metrics.LEADER.set(0)
        if label is not None and label_task is not None:
            label.want(False)
            if not await label.settled(LABEL_SETTLE_SECONDS):
                log.warning("stopping with this operator's pod still labelled the leader")
            label_task.cancel()
            await asyncio.gather(label_task, return_exceptions=True)
        if lease_api is not None:
            await lease_api.close()
        await runner.cleanup()


async def _first(work: Any, stop: asyncio.Event) -> bool:
    """Await ``work`` unless ``stop`` is set first; True if the work finished."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for fut in (task, stopper):
        fut.cancel()
    await asyncio.gather(task, stopper, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # a failure of the work is raised here
    return True


def own_identity(election: ElectionConfig | None) -> str:
    """Who this operator is to kopf: the leader-election identity (the pod name), else host and
    PID. Left to itself kopf makes one from the login name, and a container running as a uid
    with no passwd entry (the chart's 65532) has none: ``getpass.getuser()`` raised KeyError
    and the operator pod crashed on start."""
    if election is not None and election.identity:
        return election.identity
    return f"{socket.gethostname()}/{os.getpid()}"


async def _serve(
    config: OperatorConfig,
    namespaces: list[str],
    probes: Probes,
    stop: asyncio.Event,
    lease: LeaderLease | None,
    election: ElectionConfig | None,
    label: LeaderPodLabel | None,
) -> int:
    loop = asyncio.get_running_loop()
    memo = kopf.Memo(config=config)
    stop_flag = asyncio.Event()
    exit_code = 0
    side = BackgroundTasks(log, "leadership task")

    def exiting() -> None:
        """A drain in progress stops now and leaves its pods to the next operator; it would
        otherwise be cancelled half way by kopf's exit (its daemon is never cancelled)."""
        runtime: OperatorRuntime | None = getattr(memo, "runtime", None)
        if runtime is not None:
            runtime.begin_exit()

    if lease is not None and election is not None:

        async def keep() -> None:
            nonlocal exit_code
            try:
                await lease.keep(election.renew_deadline)
            except LeaseLost as exc:
                if stop.is_set():  # we released it: the handover
                    return
                log.error("lost leadership: %s; stopping", exc, extra=lease.fields)
                exit_code = 1
                exiting()
                stop_flag.set()

        async def announce() -> None:
            await probes.serving.wait()
            runtime: OperatorRuntime = memo.runtime
            try:
                expected = await expected_deployments(runtime.api, namespaces)
            except Exception as exc:
                log.warning("could not list AgentDeployments: %s", brief(exc), extra=lease.fields)
                expected = set()
            await announce_serving(lease, expected, runtime.serving, election.handover_timeout)

        side.spawn(keep())
        side.spawn(announce())
    # kopf waits up to 5 s at exit for tasks started after this; ours are cancelled by us
    existing = set(asyncio.all_tasks())
    lingering = asyncio.create_task(_report_lingering(stop_flag, existing))
    existing.add(lingering)  # kopf reads this set when it stops: the report is not waited for
    tasks = await kopf.spawn_tasks(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # leadership is ours (the Lease), not kopf's peering
        # kopf types it as its peering.Identity, a NewType of str it does not export
        identity=own_identity(election),  # type: ignore[arg-type]
        memo=memo,
        ready_flag=probes.serving,
        stop_flag=stop_flag,
    )

    async def leave() -> None:
        runtime: OperatorRuntime | None = getattr(memo, "runtime", None)
        if lease is not None and election is not None and runtime is not None and lease.held:
            log.info("handing over to the next operator", extra=lease.fields)
            if label is not None:
                label.want(False)  # new runner connections go to the next leader
            how = await hand_over(lease, runtime.handover, election)
            log.info("handover done: %s", how, extra=lease.fields)
        stop_flag.set()

    def on_signal(sig: signal.Signals) -> None:
        exiting()
        if stop.is_set():  # a second signal: stop now
            log.info("%s again: stopping without waiting", sig.name)
            stop_flag.set()
            return
        stop.set()
        log.info("%s received: stopping", sig.name)
        side.spawn(leave())

    # kopf installed its own handlers in spawn_tasks; ours hand over before kopf stops
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if stop.is_set():  # a signal came while kopf was starting
        side.spawn(leave())

    try:
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        loop.set_exception_handler(_kopf_watch_exit_handler)  # for asyncio.run's shutdown
        lingering.cancel()
        await asyncio.gather(lingering, return_exceptions=True)
        await side.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return exit_code


def _kopf_watch_exit_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """At exit, asyncio closes the async generators left open. kopf's watch stream
    (``infinite_watch``) is one when the stop caught it waiting on its pause toggle, and its
    pause block does not close on that ("generator didn't stop after athrow()"). The process
    is leaving and the stream's connection goes with it: that is said as a warning, not an
    error. Anything else goes to asyncio's default handler."""
    agen = context.get("asyncgen")
    code = getattr(agen, "ag_code", None)
    if code is not None and code.co_name == "infinite_watch" and "/kopf/" in code.co_filename:
        error = context.get("exception")
        log.warning(
            "kopf's watch stream did not close cleanly at exit (harmless, the process is leaving): %r", error
        )
        return
    loop.default_exception_handler(context)


async def _report_lingering(stop_flag: asyncio.Event, existing: set[asyncio.Task[Any]]) -> None:
    """Name the tasks still running a while after the stop: kopf waits for them (up to 5 s)
    before it exits, so one that ignores its cancellation delays a deploy."""
    await stop_flag.wait()
    await asyncio.sleep(LINGER_REPORT_SECONDS)
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t not in existing and t is not me and not t.done()]
    if pending:
        log.warning(
            "%d tasks still running %.0fs after the stop: %s",
            len(pending),
            LINGER_REPORT_SECONDS,
            "; ".join(sorted(_where(t) for t in pending)),
        )


def _where(task: asyncio.Task[Any]) -> str:
    """A task's chain of awaits, outermost first: ``outer file:line > inner file:line``."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        name = getattr(coro, "__qualname__", type(coro).__name__)
        if frame is not None:
            name += f" {frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        chain.append(name)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(chain[:1] + chain[1:][-5:])
