"""TLS for the runner stream: the operator's certificate, re-read when its files change.

cert-manager (or anything else) renews a certificate by rewriting the mounted Secret; each
new TLS handshake checks the files' identity and loads the new pair, so a renewal needs no
restart and attached runners keep their streams. A pair that does not load (half-written,
key not matching) is refused and the current one kept.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import grpc

log = logging.getLogger("agent_operator.supervisor.tls")


class CertificateError(Exception):
    """The certificate or key cannot be used."""


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)  # follows the symlinks a Secret volume swaps on update
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _load(cert: Path, key: Path) -> tuple[bytes, bytes]:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        return key.read_bytes(), cert.read_bytes()
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"{cert}, {key}: {exc}") from exc


class ReloadingServerCertificate:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        try:
            self._stamp = _stamp(cert, key)
        except OSError as exc:
            raise CertificateError(f"{cert}, {key}: {exc}") from exc
        self._initial = _load(cert, key)
        self.reloads = 0

    def credentials(self) -> grpc.ServerCredentials:
        initial = grpc.ssl_server_certificate_configuration([self._initial])
        return grpc.dynamic_ssl_server_credentials(initial, self._fetch)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake (off the event loop): None keeps the current pair."""
        try:
            stamp = _stamp(self.cert, self.key)
        except OSError as exc:
            log.warning("runner TLS certificate files unreadable, keeping the current pair: %s", exc)
            return None
        if stamp == self._stamp:
            return None
        self._stamp = stamp  # warn once per change, not on every handshake
        try:
            pair = _load(self.cert, self.key)
        except CertificateError as exc:
            log.warning("runner TLS certificate not reloaded, keeping the current one: %s", exc)
            return None
        self.reloads += 1
        log.info("runner TLS certificate reloaded from %s", self.cert)
        return grpc.ssl_server_certificate_configuration([pair])
