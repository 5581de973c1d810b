"""kopf handlers: thin wiring from Kubernetes watch events to the operator runtime.

Each handler pulls out its arguments and calls a plain method of ``OperatorRuntime``
(tested without kopf). Importing this module registers the handlers.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_operator.kube.podspec import LABEL_DEPLOYMENT, Owner
from agent_operator.runtime import DrainInterrupted, OperatorRuntime
from agent_operator.spec import GROUP, PLURAL, VERSION

FINALIZER = f"{GROUP}/finalizer"


@kopf.on.startup()
async def startup(*, settings: kopf.OperatorSettings, memo: Any, logger: Any, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # the operator posts its own, meaningful Events
    # no runtime scanning of CRDs and namespaces: it needs cluster-wide list/watch the chart's
    # least-privilege RBAC does not grant; namespaces are given explicitly (or all), and the
    # CRD is installed before the operator (Helm's crds/)
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 20]
    runtime = OperatorRuntime(memo.config)
    await runtime.start()
    memo.runtime = runtime
    logger.info(
        "runner supervisor on port %d; runners dial %s", runtime.runner_port, memo.config.runner_address
    )


@kopf.on.cleanup()
async def cleanup(*, memo: Any, **_: Any) -> None:
    runtime: OperatorRuntime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.daemon(GROUP, VERSION, PLURAL, backoff=5, cancellation_timeout=None)
async def serve(
    *,
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    runtime: OperatorRuntime = memo.runtime
    owner = Owner(namespace or "", name, uid)
    await runtime.serve_deployment(
        owner,
        dict(spec),
        int(meta.get("generation") or 0),
        stopped,
        lambda: meta.get("deletionTimestamp"),
        dict(status),
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def drained(
    *,
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    **_: Any,
) -> None:
    """Holds the finalizer until the drain is done. kopf runs it again on the next operator
    if this one stops first (and it runs no daemon for a resource being deleted), so a drain
    cut short by a restart is resumed rather than lost."""
    runtime: OperatorRuntime = memo.runtime
    owner = Owner(namespace or "", name, uid)
    try:
        await runtime.finish_deletion(
            owner, dict(spec), int(meta.get("generation") or 0), meta.get("deletionTimestamp"), dict(status)
        )
    except DrainInterrupted as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc


@kopf.on.event(GROUP, VERSION, PLURAL)
async def deployment_changed(*, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if event.get("type") in ("ADDED", "MODIFIED", None):
        runtime: OperatorRuntime = memo.runtime
        runtime.deployment_changed(dict(event["object"]))


@kopf.on.event("", "v1", "pods", labels={LABEL_DEPLOYMENT: kopf.PRESENT})
async def pod_changed(*, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    runtime: OperatorRuntime = memo.runtime
    await runtime.on_pod_event(str(event.get("type") or "MODIFIED"), dict(event["object"]))
