"""A real livekit-server on loopback, single node (no Redis), with dev keys.

Media: one UDP port and one TCP port on 127.0.0.1, and loopback ICE candidates enabled so
that clients on the same machine can connect. ``node_ip`` can be pointed at another local
address (a network namespace's veth end) if a WebRTC stack refuses loopback.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import socket
from pathlib import Path

import yaml
from livekit import api

from devenv import binaries
from devenv.procs import ServerProcess, free_port, http_ok, wait_until


@dataclasses.dataclass(frozen=True)
class LiveKitAccess:
    url: str  # ws://host:port
    api_key: str
    api_secret: str

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://").replace("wss://", "https://")


class LocalLiveKit:
    def __init__(
        self, workdir: Path, node_ip: str | None = None, webhook_urls: list[str] | None = None
    ) -> None:
        self.workdir = workdir
        # inside devenv/netns-run: the namespace's veth end; else loopback
        self.node_ip = node_ip or os.environ.get("AGENT_OPERATOR_TEST_NODE_IP", "127.0.0.1")
        self.rtc_interface = os.environ.get("AGENT_OPERATOR_TEST_RTC_INTERFACE", "lo")
        self.webhook_urls = webhook_urls or []
        self.api_key = "devkey"
        # livekit-server requires secrets of at least 32 characters
        self.api_secret = secrets.token_urlsafe(32)
        self.port = 0
        self.process: ServerProcess | None = None
        self.access: LiveKitAccess | None = None

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "port": self.port,
            "bind_addresses": [self.node_ip],
            "rtc": {
                "tcp_port": self._tcp_port,
                "udp_port": self._udp_port,
                "use_external_ip": False,
                "node_ip": self.node_ip,
                "enable_loopback_candidate": True,
                "stun_servers": [],
                # ICE candidates only on the test interface, never the machine's own addresses
                "interfaces": {"includes": [self.rtc_interface]},
                "ips": {"includes": [f"{self.node_ip}/32"]},
            },
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": "info", "json": False},
            "room": {"empty_timeout": 60, "departure_timeout": 5},
        }
        if self.webhook_urls:
            config["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        return config

    def start(self, timeout: float = 60.0) -> LiveKitAccess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._tcp_port = free_port()
        self._udp_port = free_port(socket.SOCK_DGRAM)
        self._write_config()
        self.process = ServerProcess(
            "livekit-server",
            [str(binaries.find("livekit-server")), f"--config={self.workdir / 'livekit.yaml'}"],
            self.workdir / "logs",
            env=dict(os.environ),
        )
        self.process.start()
        self.access = LiveKitAccess(f"ws://{self.node_ip}:{self.port}", self.api_key, self.api_secret)
        self._wait_ready(timeout)
        return self.access

    def _write_config(self) -> None:
        path = self.workdir / "livekit.yaml"
        path.write_text(yaml.safe_dump(self.config()))
        path.chmod(0o600)

    def _wait_ready(self, timeout: float) -> None:
        wait_until(
            lambda: http_ok(f"http://{self.node_ip}:{self.port}/"),
            timeout,
            "livekit-server health",
            self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start again on the same ports and keys (fault injection)."""
        import time

        assert self.process is not None
        self.process.stop()
        time.sleep(down_for)
        self.process.start()
        self._wait_ready(60)


def room_token(livekit: LiveKitAccess, room: str, identity: str, agent: bool = False) -> str:
    """A token that lets ``identity`` join ``room`` (publish and subscribe; as an agent if asked)."""
    grants = api.VideoGrants(room_join=True, room=room, agent=agent, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


def credentials_secret(livekit: LiveKitAccess, name: str) -> dict[str, object]:
    """The Secret an AgentDeployment's ``credentialsSecretRef`` names: the LiveKit API key and secret."""
    encoded = {
        "api-key": base64.b64encode(livekit.api_key.encode()).decode(),
        "api-secret": base64.b64encode(livekit.api_secret.encode()).decode(),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": encoded,
    }
