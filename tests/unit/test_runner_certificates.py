"""The operator-managed runner CA and serving certificate (no servers)."""

from __future__ import annotations

import dataclasses
import datetime
import ssl
from pathlib import Path

import pytest

from agent_operator import runner_certificates as rc
from agent_operator.runtime import runner_host

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
HOSTS = ("agent-operator.ops.svc",)


def test_issued_pair_serves_and_verifies_against_its_ca(tmp_path: Path) -> None:
    pki = rc.issue(HOSTS, NOW)
    assert rc.serving_problem(pki, HOSTS, NOW) == ""
    cert, key, ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    cert.write_text(pki.cert_pem)
    key.write_text(pki.key_pem)
    ca.write_text(pki.ca_cert_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)  # a usable pair
    assert pki.key_pem not in repr(pki)  # keys stay out of reprs (and so out of logs)
    assert pki.ca_key_pem not in repr(pki)


def test_another_host_or_nearing_expiry_needs_a_new_serving_certificate() -> None:
    pki = rc.issue(HOSTS, NOW)
    assert "does not name other.ops.svc" in rc.serving_problem(pki, ("other.ops.svc",), NOW)
    assert "expires on" in rc.serving_problem(pki, HOSTS, NOW + datetime.timedelta(days=340))


def test_reissue_keeps_the_ca() -> None:
    pki = rc.issue(HOSTS, NOW)
    later = NOW + datetime.timedelta(days=340)
    renewed = rc.reissue(pki, HOSTS, later)
    assert renewed.ca_cert_pem == pki.ca_cert_pem
    assert renewed.cert_pem != pki.cert_pem
    assert rc.serving_problem(renewed, HOSTS, later) == ""


def test_an_ip_address_is_named_as_one() -> None:
    pki = rc.issue(("10.0.0.7",), NOW)
    assert rc.serving_problem(pki, ("10.0.0.7",), NOW) == ""


def test_a_certificate_of_another_ca_or_a_mismatched_key_is_found_out() -> None:
    pki, other = rc.issue(HOSTS, NOW), rc.issue(HOSTS, NOW)
    assert "not issued by the CA" in rc.serving_problem(
        dataclasses.replace(pki, cert_pem=other.cert_pem, key_pem=other.key_pem), HOSTS, NOW
    )
    assert "does not belong" in rc.serving_problem(
        dataclasses.replace(pki, key_pem=other.key_pem), HOSTS, NOW
    )
    with pytest.raises(rc.CertificateProblem, match="CA key"):
        rc.serving_problem(dataclasses.replace(pki, ca_key_pem=other.ca_key_pem), HOSTS, NOW)
    with pytest.raises(rc.CertificateProblem, match="cannot be read"):
        rc.serving_problem(dataclasses.replace(pki, ca_cert_pem="junk"), HOSTS, NOW)


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("agent-operator.ops.svc:50051", "agent-operator.ops.svc"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:5", "::1"),
    ],
)
def test_runner_host(address: str, host: str) -> None:
    assert runner_host(address) == host
