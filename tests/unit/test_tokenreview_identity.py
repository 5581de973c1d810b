"""Which pod a reviewed token is bound to."""

from __future__ import annotations

import pytest

from agent_operator.kube.tokenreview import identity_from_review
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
