"""The operator gives kopf its identity: kopf's own needs a passwd entry for the process's uid,
which the operator container (uid 65532, no entry in the image) does not have."""

from __future__ import annotations

import os
import pwd
import socket

import pytest
from kopf._core.engines import peering

from agent_operator.app import own_identity
from agent_operator.leadership import ElectionConfig

pytestmark = pytest.mark.unit


@pytest.fixture
def no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the operator container: no login name in the environment, no passwd entry."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)

    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", missing)


def test_kopfs_own_identity_needs_a_passwd_entry(no_passwd_entry: None) -> None:
    with pytest.raises(KeyError, match="uid not found"):
        peering.detect_own_id(manual=False)


def test_the_operator_names_itself_without_one(no_passwd_entry: None) -> None:
    assert own_identity(None) == f"{socket.gethostname()}/{os.getpid()}"
    election = ElectionConfig(namespace="ops", identity="livekit-agent-operator-7c4f-p7bv6")
    assert own_identity(election) == "livekit-agent-operator-7c4f-p7bv6"
