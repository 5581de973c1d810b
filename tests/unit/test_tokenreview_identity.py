"""Which pod a reviewed token is bound to."""

from __future__ import annotations

import base64
import json

import pytest

from agent_operator.kube.tokenreview import identity_from_review, implausible
from agent_operator.supervisor.types import AuthError, PodIdentity

pytestmark = pytest.mark.unit

POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"


def test_bound_service_account_token() -> None:
    got = identity_from_review("system:serviceaccount:ns1:runner", {POD_NAME: ["p"], POD_UID: ["u"]})
    assert got == PodIdentity("ns1", "p", "u")


def test_unbound_token_is_refused() -> None:
    with pytest.raises(AuthError, match="not bound to a pod"):
        identity_from_review("system:serviceaccount:ns1:runner", {})


def test_user_token_is_refused() -> None:
    with pytest.raises(AuthError, match="not a ServiceAccount token"):
        identity_from_review("alice", {POD_NAME: ["p"], POD_UID: ["u"]})


def jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


AUD = "agentoperator.dev/runner"


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        ("not-a-token", "not a JWT"),
        ("a.b.c", "not a JWT"),
        (jwt(["a list"]), "not a JWT"),
        (jwt({"aud": ["https://kubernetes.default.svc"], "exp": 2e9}), "not for audience"),
        (jwt({"aud": [AUD], "exp": 1000}), "expired"),
        (jwt({"aud": [AUD], "exp": 2e9}), ""),
        (jwt({"aud": AUD}), ""),
    ],
)
def test_only_a_plausible_token_is_worth_a_review(credential: str, why: str) -> None:
    got = implausible(credential, AUD, now=1.8e9)
    assert (got == "") if not why else (why in got)
