"""The LiveKit credentials of an AgentDeployment, read from its Secret (by the operator only)."""

from __future__ import annotations

import base64
import binascii
import dataclasses

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator import metrics
from agent_operator.kube import timeouts
from agent_operator.spec import SecretRef


@dataclasses.dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str = dataclasses.field(repr=False)


class CredentialsError(Exception):
    """The Secret cannot be used; ``reason`` is a condition reason, the message says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def read_credentials(api: client.ApiClient, namespace: str, ref: SecretRef) -> Credentials:
    try:
        with metrics.kube_call("read_secret", expected=(404,)):
            secret = await client.CoreV1Api(api).read_namespaced_secret(
                ref.name, namespace, _request_timeout=timeouts.REQUEST_TIMEOUT_SECONDS
            )
    except ApiException as exc:
        if exc.status == 404:
            raise CredentialsError(
                "SecretNotFound",
                f"Secret {namespace}/{ref.name} (livekit.credentialsSecretRef) does not exist",
            ) from exc
        if exc.status == 403:
            raise CredentialsError(
                "SecretForbidden", f"the operator may not read Secret {namespace}/{ref.name}: {exc.reason}"
            ) from exc
        raise
    data = secret.data or {}
    values = {}
    for key in (ref.api_key_key, ref.api_secret_key):
        if key not in data:
            raise CredentialsError(
                "SecretKeyMissing", f"Secret {namespace}/{ref.name} has no key {key!r} (keys: {sorted(data)})"
            )
        try:
            values[key] = base64.b64decode(data[key]).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(
                "SecretInvalid", f"Secret {namespace}/{ref.name} key {key!r} is not text"
            ) from exc
        if not values[key]:
            raise CredentialsError("SecretKeyMissing", f"Secret {namespace}/{ref.name} key {key!r} is empty")
    return Credentials(values[ref.api_key_key], values[ref.api_secret_key])
