"""containerd (Debian's, with runc and the CNI plugins) as the real node's CRI runtime.

Everything it keeps is under the run's work folder: root, state, socket, runc's state, the
pods' network namespaces, the CNI bridge's address leases. Several runs can therefore share
the machine. ``stop`` kills every container and sandbox it ran, waits for their shims, and
unmounts what is left under the folder (rootfs overlays, network namespaces, the kubelet's
volumes), so repeated runs leak no mounts, veths or processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from devenv.procs import ServerProcess, wait_until

NAMESPACE = "k8s.io"
CNI_BIN_DIR = Path("/usr/lib/cni")
# libcni's result cache: fixed in containerd 1.6, one file per sandbox ID and interface
CNI_RESULTS = Path("/var/lib/cni/results")
POD_CIDR = "10.244.0.0/24"


class ContainerdError(RuntimeError):
    """A ``ctr`` command failed; the message carries its output."""


def _config(workdir: Path, sandbox_image: str) -> str:
    return f"""version = 2
root = "{workdir / "root"}"
state = "{workdir / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{workdir / "containerd.sock"}"

[ttrpc]
  address = "{workdir / "containerd-ttrpc.sock"}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj for the sandbox is refused
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{workdir / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{workdir / "net.d"}"
    max_conf_num = 1
"""


def _cni_conflist(workdir: Path) -> str:
    return f"""{{
  "cniVersion": "0.4.0",
  "name": "agent-operator-pods",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{workdir / "cni-ipam"}",
        "ranges": [[{{"subnet": "{POD_CIDR}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"""


class Containerd:
    """One containerd for one node, with its own socket under ``workdir``."""

    def __init__(self, workdir: Path, sandbox_image: str) -> None:
        self.workdir = workdir
        self.sandbox_image = sandbox_image
        self.socket = workdir / "containerd.sock"
        self.process = ServerProcess(
            "containerd",
            ["containerd", f"--config={workdir / 'config.toml'}", "--log-level=warn"],
            workdir / "logs",
        )

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0) -> None:
        for sub in ("root", "state", "runc", "net.d", "cni-ipam", "opt"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "config.toml").write_text(_config(self.workdir, self.sandbox_image))
        (self.workdir / "net.d" / "10-pods.conflist").write_text(_cni_conflist(self.workdir))
        self.process.start()
        wait_until(lambda: self._ctr_ok("version"), timeout, "containerd socket", self.process)

    # -- ctr -------------------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 120.0) -> str:
        proc = subprocess.run(
            ["ctr", f"--address={self.socket}", f"--namespace={NAMESPACE}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _ctr_ok(self, *args: str) -> bool:
        try:
            self.ctr(*args, timeout=10)
        except (ContainerdError, subprocess.TimeoutExpired):
            return False
        return True

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive (``devenv/oci.py``) for the CRI to run."""
        self.ctr("images", "import", str(archive))

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").split()

    def kill_task(self, container_id: str, sig: signal.Signals) -> None:
        self.ctr("tasks", "kill", "--signal", sig.name, container_id)

    def task_pid(self, container_id: str) -> int:
        """The host PID of a container's main process."""
        for line in self.ctr("tasks", "ls").splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return int(fields[1])
        raise ContainerdError(f"no running task {container_id}")

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill every task, delete containers, stop containerd and its shims, unmount leftovers."""
        ids: list[str] = []
        if self.process.alive():
            ids = self._kill_all_tasks()
        self.process.stop()
        self._kill_shims()
        unmount_under(self.workdir)
        _remove_cni_results(ids)

    def _kill_all_tasks(self) -> list[str]:
        """Kill and delete every task and container; return the containers' (and sandboxes') IDs."""
        containers: list[str] = []
        with contextlib.suppress(ContainerdError, subprocess.TimeoutExpired):
            containers = self.ctr("containers", "ls", "-q").split()
            ids = [line.split()[0] for line in self.ctr("tasks", "ls").splitlines()[1:] if line.strip()]
            for cid in ids:
                with contextlib.suppress(ContainerdError):
                    self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, timeout=10)
            deadline = time.monotonic() + 15
            for cid in ids:
                while time.monotonic() < deadline:
                    try:
                        self.ctr("tasks", "delete", cid, timeout=10)
                        break
                    except ContainerdError as exc:
                        if "not found" in str(exc):
                            break
                        time.sleep(0.2)
            for cid in containers:
                with contextlib.suppress(ContainerdError):
                    self.ctr("containers", "delete", cid, timeout=10)
        return containers

    def shims(self) -> list[int]:
        """Our shims' PIDs: they daemonize out of containerd's process group, so find them by
        the socket address on their command line."""
        marker = str(self.socket).encode()
        found = []
        for pid in _pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                found.append(pid)
        return found

    def _kill_shims(self) -> None:
        for pid in self.shims():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _remove_cni_results(ids: list[str]) -> None:
    """Sandboxes killed without a CNI DEL leave their cached results behind: remove ours."""
    if not ids or not CNI_RESULTS.is_dir():
        return
    wanted = set(ids)
    for entry in CNI_RESULTS.iterdir():
        if wanted.intersection(entry.name.split("-")):
            with contextlib.suppress(OSError):
                entry.unlink()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return points


def unmount_under(folder: Path) -> list[str]:
    """Unmount (lazily, deepest first) every mount point under ``folder``; return them."""
    points = mounts_under(folder)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return points
