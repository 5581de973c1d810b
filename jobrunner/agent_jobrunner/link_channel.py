"""How the runner dials the operator: the channel (plain, or TLS with the operator's CA), its
options and the runner's token, and how a stream's failure reads in a log line."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import aio

from agent_jobrunner.config import RunnerConfig
from agent_jobrunner.protocol import MAX_MESSAGE_BYTES

# One long-lived stream: HTTP/2 keepalive finds a dead peer behind a silent network; the
# operator pings far more often than this, which also keeps the server's ping policy content.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # our own backoff decides when to retry; a fresh channel per attempt
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


class AttachError(Exception):
    """An attach attempt failed before the operator's Welcome."""


def read_credential(config: RunnerConfig) -> str:
    """The runner's projected token (blocking: run it in a thread)."""
    path = config.token_path
    try:
        return path.read_text().strip()
    except OSError as err:
        raise AttachError(f"cannot read the runner token {path}: {err.strerror or err}") from None


async def open_channel(config: RunnerConfig) -> Any:
    """A fresh channel to the operator, TLS when a CA is configured (inline or as a file)."""
    address = config.operator_address
    ca_path = config.tls_ca_path
    ca = config.tls_ca_pem
    if ca is None and ca_path is None:
        return aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    if ca is None and ca_path is not None:
        try:
            ca = await asyncio.to_thread(ca_path.read_bytes)
        except OSError as err:
            raise AttachError(f"cannot read the operator CA {ca_path}: {err.strerror or err}") from None
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    return aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def describe(error: BaseException | None) -> str:
    """A stream's failure for a log line: the gRPC status and details, else the error."""
    if error is None:
        return ""
    if isinstance(error, aio.AioRpcError):
        code = error.code()
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        return f"{name}: {error.details() or ''}".rstrip(": ")
    return str(error) or type(error).__name__
