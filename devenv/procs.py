"""Starting and stopping the test environment's server processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

# Ports are handed out below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
# 32768-60999 by default), and below the NodePort range (30000-32767): a port picked in the
# ephemeral range can be taken as the local port of another process's outgoing connection
# before its server binds it (suspected when an operator never served /readyz in a
# fresh-clone CI run). No port is handed out twice by one process either.
_PORT_RANGE = (20000, 30000)
_handed_out: set[int] = set()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))  # free on every address, the node IP's included
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on every address right now, outside the ephemeral range, not handed out
    before by this process."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*_PORT_RANGE)
        if port not in _handed_out and _bindable(port, kind):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE[0]}-{_PORT_RANGE[1]}")


class ServerProcess:
    """A server binary run as a child process, its output kept in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}; last output:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, for fault injection."""
        self.stop(timeout=0.1, sig=signal.SIGKILL)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: ServerProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; fail early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None:
            process.check_alive()
        try:
            if check():
                return
        except Exception as exc:  # the check's failure is the reason we keep polling
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    tail = f"\n{process.name} output:\n{process.tail()}" if process else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")


def http_ok(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> bool:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback test URLs only
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:  # noqa: S310
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
