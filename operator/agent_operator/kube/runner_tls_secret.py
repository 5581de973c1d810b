"""The Secret that keeps the operator-managed runner TLS material (``runner_certificates``).

Read at start; created when missing (when two replicas race, the one that loses the create
reads the winner's); its serving certificate issued again from the same CA when it nears
expiry or no longer names the runner address. A restart therefore reuses the CA that the
runner pods already carry in their spec. The operator needs ``get`` and ``update`` on this
one Secret and ``create`` on Secrets in its namespace (RBAC cannot name an object that does
not exist yet).
"""

from __future__ import annotations

import base64
import datetime
import logging

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator import metrics, runner_certificates
from agent_operator.kube import timeouts
from agent_operator.runner_certificates import CertificateProblem, RunnerPKI

log = logging.getLogger("agent_operator.kube.runner_tls")

KEYS = {"ca.crt": "ca_cert_pem", "ca.key": "ca_key_pem", "tls.crt": "cert_pem", "tls.key": "key_pem"}


def _decode(secret: client.V1Secret) -> RunnerPKI:
    data = secret.data or {}
    missing = sorted(k for k in KEYS if k not in data)
    if missing:
        raise CertificateProblem(f"keys missing: {', '.join(missing)}")
    try:
        values = {field: base64.b64decode(data[k]).decode() for k, field in KEYS.items()}
    except (ValueError, UnicodeDecodeError) as exc:
        raise CertificateProblem(f"not PEM text: {exc}") from exc
    return RunnerPKI(**values)


def _body(name: str, pki: RunnerPKI, resource_version: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "livekit-agent-operator"},
    }
    if resource_version:
        meta["resourceVersion"] = resource_version  # update only the Secret we read
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {k: base64.b64encode(getattr(pki, field).encode()).decode() for k, field in KEYS.items()},
    }


async def load_or_create(
    api: client.ApiClient, namespace: str, name: str, hosts: tuple[str, ...]
) -> RunnerPKI:
    """The runner TLS material kept in Secret ``namespace/name``, made or renewed as needed."""
    core = client.CoreV1Api(api)
    where = f"Secret {namespace}/{name}"
    for _ in range(3):  # a lost create or update race: read what the other replica wrote
        now = datetime.datetime.now(datetime.UTC)
        try:
            with metrics.kube_call("read_secret", expected=(404,)):
                secret = await core.read_namespaced_secret(
                    name, namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as exc:
            if exc.status != 404:
                raise
            pki = runner_certificates.issue(hosts, now)
            try:
                await core.create_namespaced_secret(
                    namespace, _body(name, pki), _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise
            log.info(
                "runner TLS: created a CA and a serving certificate for %s in %s", ", ".join(hosts), where
            )
            return pki
        try:
            pki = _decode(secret)
            why = runner_certificates.serving_problem(pki, hosts, now)
        except CertificateProblem as exc:
            # the CA itself is unusable: a new one (pods created before it stop verifying)
            log.warning("runner TLS: %s cannot be used (%s); making a new CA", where, exc)
            pki, why = runner_certificates.issue(hosts, now), "new CA"
        else:
            if not why:
                return pki
            pki = runner_certificates.reissue(pki, hosts, now)
        try:
            await core.replace_namespaced_secret(
                name,
                namespace,
                _body(name, pki, secret.metadata.resource_version),
                _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status == 409:
                continue
            raise
        log.info("runner TLS: issued a new serving certificate in %s: %s", where, why)
        return pki
    raise RuntimeError(f"{where} kept changing while it was read; try again")
