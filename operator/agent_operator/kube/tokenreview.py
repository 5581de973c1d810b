"""Runner authentication by the Kubernetes-native way: a projected ServiceAccount token.

Each runner pod mounts a token the kubelet requests for it (TokenRequest), bound to the pod
and with the operator's audience. The operator checks it with a TokenReview: the API server
says whether it is valid for that audience and which pod (name and uid) it is bound to.
A token copied out of one pod therefore cannot attach as another pod, a token for
another audience (the default ServiceAccount token, say) is refused, and a deleted
pod's token stops working. Nothing is stored by the operator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator.kube import timeouts
from agent_operator.kube.pods import transient
from agent_operator.vocabulary import AuthError, AuthUnavailable, PodIdentity

log = logging.getLogger("agent_operator.kube.tokenreview")

DEFAULT_AUDIENCE = "agentoperator.dev/runner"
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class TokenReviewAuthenticator:
    def __init__(
        self,
        api: client.ApiClient,
        audience: str = DEFAULT_AUDIENCE,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._auth = client.AuthenticationV1Api(api)
        self.audience = audience
        self._cache_seconds = cache_seconds
        self._clock = clock
        # sha256(token) -> (identity, expiry); a re-attach storm costs one review per pod
        self._cache: dict[str, tuple[PodIdentity, float]] = {}

    async def authenticate(self, credential: str) -> PodIdentity:
        if not credential:
            raise AuthError("no credential presented")
        key = hashlib.sha256(credential.encode()).hexdigest()
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        why = implausible(credential, self.audience, time.time())
        if why:  # refused without asking the API server: garbage costs no TokenReview
            raise AuthError(f"credential refused: {why}")
        identity = await self._review(credential)
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[key] = (identity, now + self._cache_seconds)
        return identity

    async def _review(self, credential: str) -> PodIdentity:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": credential, "audiences": [self.audience]},
        }
        try:
            review = await self._auth.create_token_review(
                body, _request_timeout=timeouts.TOKENREVIEW_TIMEOUT_SECONDS
            )
        except Exception as exc:
            if transient(exc):  # unreachable, restarting, throttled: not the runner's fault
                what = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else type(exc).__name__
                raise AuthUnavailable(f"TokenReview unavailable ({what}); try again") from exc
            if isinstance(exc, ApiException):
                detail = f"{exc.status} {exc.reason}"
                raise AuthError(f"could not verify the credential: TokenReview failed ({detail})") from exc
            raise
        status = review.status
        if not status or not status.authenticated:
            why = (status and status.error) or "not valid"
            raise AuthError(f"credential refused by the API server: {why}")
        if self.audience not in (status.audiences or []):
            raise AuthError(f"credential is not for audience {self.audience!r}")
        return identity_from_review(status.user.username or "", status.user.extra or {})


def implausible(credential: str, audience: str, now: float) -> str:
    """Why ``credential`` cannot be a projected token for ``audience`` ("" when it may be).

    Reads the JWT's claims without checking its signature (the TokenReview does that): only
    a token that could pass the review is worth one (pure; unit-tested)."""
    parts = credential.split(".")
    if len(parts) != 3:
        return "not a JWT"
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return "not a JWT"
    if not isinstance(claims, dict):
        return "not a JWT"
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        return f"not for audience {audience!r}"
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp < now:
        return "expired"
    return ""


def identity_from_review(username: str, extra: dict[str, list[str]]) -> PodIdentity:
    """The pod a reviewed ServiceAccount token is bound to (pure; unit-tested)."""
    if not username.startswith(_SA_PREFIX):
        raise AuthError(f"credential is not a ServiceAccount token (user {username!r})")
    namespace = username.removeprefix(_SA_PREFIX).split(":", 1)[0]
    names, uids = extra.get(_POD_NAME) or [], extra.get(_POD_UID) or []
    if len(names) != 1 or len(uids) != 1:
        raise AuthError("credential is not bound to a pod (use a projected ServiceAccount token)")
    return PodIdentity(namespace=namespace, name=names[0], uid=uids[0])
