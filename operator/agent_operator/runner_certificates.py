"""The runner stream's certificates when the operator manages them itself (pure, no I/O).

When the user brings no certificate, the operator makes a private CA and a serving
certificate for the runner address, and keeps both in a Secret (``kube.runner_tls_secret``).
Runner pods get the CA in their spec, so the CA outlives every serving certificate: a
serving certificate that expires within ``RENEW_BEFORE`` or does not name the runner address
is issued again from the same CA, and pods created before keep verifying. Keys are ECDSA
P-256.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
SERVING_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
BACKDATE = datetime.timedelta(minutes=5)  # clocks of other nodes may lag


class CertificateProblem(Exception):
    """Kept material that cannot be used (unparsable, or a key that does not match)."""


@dataclasses.dataclass(frozen=True)
class RunnerPKI:
    ca_cert_pem: str
    ca_key_pem: str = dataclasses.field(repr=False)
    cert_pem: str
    key_pem: str = dataclasses.field(repr=False)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(hosts: tuple[str, ...], now: datetime.datetime) -> RunnerPKI:
    """A new CA and a serving certificate for ``hosts`` (DNS names or IP addresses)."""
    ca_key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "livekit-agent-operator runner CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    return reissue(RunnerPKI(ca_pem, _pem_key(ca_key), "", ""), hosts, now)


def reissue(pki: RunnerPKI, hosts: tuple[str, ...], now: datetime.datetime) -> RunnerPKI:
    """A new serving certificate for ``hosts`` from ``pki``'s CA (the CA stays)."""
    ca, ca_key = _ca(pki)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVING_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return dataclasses.replace(
        pki, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem=_pem_key(key)
    )


def _ca(pki: RunnerPKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate(pki.ca_cert_pem.encode())
        ca_key = serialization.load_pem_private_key(pki.ca_key_pem.encode(), password=None)
    except ValueError as exc:
        raise CertificateProblem(f"the CA cannot be read: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca.public_key():
        raise CertificateProblem("the CA key does not belong to the CA certificate")
    return ca, ca_key


def serving_problem(pki: RunnerPKI, hosts: tuple[str, ...], now: datetime.datetime) -> str:
    """Why the serving certificate must be issued again ("" when it serves as it is).

    Raises CertificateProblem when the CA itself cannot be used."""
    ca, _ = _ca(pki)
    if now + RENEW_BEFORE > ca.not_valid_after_utc:
        raise CertificateProblem("the CA expires soon")
    try:
        cert = x509.load_pem_x509_certificate(pki.cert_pem.encode())
        key = serialization.load_pem_private_key(pki.key_pem.encode(), password=None)
    except ValueError as exc:
        return f"the serving certificate cannot be read ({exc})"
    if key.public_key() != cert.public_key():
        return "the serving key does not belong to the serving certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the serving certificate is not issued by the CA"
    if now + RENEW_BEFORE > cert.not_valid_after_utc:
        return f"the serving certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        named = x509.SubjectAlternativeName([])
    missing = [h for h, n in zip(hosts, _names(hosts), strict=True) if n not in named]
    if missing:
        return f"the serving certificate does not name {', '.join(missing)}"
    return ""
