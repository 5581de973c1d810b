"""The process kubelet: test support that plays one node of the cluster.

It is the only stand-in of the test environment (there is no container runtime here):

* registers a ``Node`` and binds every unscheduled pod to it (no scheduler runs);
* runs each bound pod's first container ``command`` + ``args`` as a local subprocess, in
  its own process group, with the pod's ``env`` (values, ``fieldRef``, Secret and
  ConfigMap refs) on top of a small allow-list of this machine's environment (``PATH``,
  ``PYTHONPATH``, ...). The image is **not** pulled: this machine's Python environment stands
  in for it. Volumes (``emptyDir``, ``secret``, ``configMap``, ``projected`` with
  ``serviceAccountToken`` through the TokenRequest API, ``downwardAPI``) are written
  under a per-pod folder, and any env value or argument that starts with a ``mountPath`` is
  rewritten to that folder, since a process cannot have its own mount table here;
* reports ``Pending -> Running -> Succeeded/Failed`` with container state, exit code,
  ``containerID: process://<pid>`` (tests use it to signal the process) and a ``podIP``;
* carries out graceful deletion for real: SIGTERM to the process group, wait
  ``deletionGracePeriodSeconds`` (0 = at once), SIGKILL, then finalize the deletion.

What it does not do: pull images, apply ``securityContext`` to the process (the API server's
PodSecurity admission still checks it), restart containers, run probes or init containers.

    python -m devenv.kubelet --kubeconfig admin.kubeconfig --state-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import logging
import os
import signal
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("process-kubelet")

ENV_ALLOW = (
    "PATH",
    "LANG",
    "LC_ALL",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONHOME",
    "TMPDIR",
    "SSL_CERT_FILE",
    "PYTHONDONTWRITEBYTECODE",
    "HOME",
    "GOCOVERDIR",
    "COVERAGE_PROCESS_START",
)
JSON = dict[str, Any]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodProcess:
    """One pod's container, run as a local process group."""

    def __init__(self, uid: str, namespace: str, name: str, folder: Path) -> None:
        self.uid = uid
        self.namespace = namespace
        self.name = name
        self.folder = folder
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = ""
        self.exit_code: int | None = None
        self.terminating = False
        self.waiter: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.exit_code is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


class ProcessKubelet:
    def __init__(self, api: client.ApiClient, node_name: str, state_dir: Path, api_server: str) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.node_name = node_name
        self.state_dir = state_dir
        self.api_server = api_server
        self.pods: dict[str, PodProcess] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- node ------------------------------------------------------------------------------
    async def register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux"},
            },
        }
        with contextlib.suppress(ApiException):
            await self.core.create_node(body)
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process kubelet is posting ready status",
                        "lastHeartbeatTime": now_iso(),
                        "lastTransitionTime": now_iso(),
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "5000"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "5000"},
                "nodeInfo": {
                    "kubeletVersion": "process-kubelet",
                    "containerRuntimeVersion": "process://",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": "",
                    "osImage": "",
                    "kubeProxyVersion": "",
                },
            }
        }
        await self.core.patch_node_status(
            self.node_name, status, _content_type="application/merge-patch+json"
        )
        log.info("node %s registered", self.node_name)

    # -- watch loop ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.register_node()
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod watch failed; relisting in 1s")
                await asyncio.sleep(1)

    async def _list_and_watch(self) -> None:
        pods = await self.core.list_pod_for_all_namespaces()
        listed = set()
        for pod in pods.items:
            obj = self.api.sanitize_for_serialization(pod)
            listed.add(obj["metadata"]["uid"])
            self._dispatch("MODIFIED", obj)
        for uid in list(self.pods):
            if uid not in listed:
                self._dispatch("DELETED", {"metadata": {"uid": uid}})
        rv = pods.metadata.resource_version
        w = watch.Watch()
        async with w.stream(
            self.core.list_pod_for_all_namespaces,
            resource_version=rv,
            timeout_seconds=120,
            allow_watch_bookmarks=False,
        ) as stream:
            async for event in stream:
                etype = event["type"]
                if etype == "ERROR":
                    return
                obj = event["raw_object"]
                self._dispatch(etype, obj)

    def _dispatch(self, etype: str, pod: JSON) -> None:
        task = asyncio.create_task(self._handle(etype, pod))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, etype: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        lock = self.locks.setdefault(uid, asyncio.Lock())
        async with lock:
            try:
                if etype == "DELETED":
                    await self._on_deleted(uid)
                else:
                    await self._on_pod(pod)
            except Exception:
                log.exception("handling %s of pod %s failed", etype, pod["metadata"].get("name", uid))

    async def _on_pod(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        status = pod.get("status", {})
        node = spec.get("nodeName")
        if not node:
            if not meta.get("deletionTimestamp"):
                await self._bind(meta)
            return
        if node != self.node_name:
            return
        uid = meta["uid"]
        running = self.pods.get(uid)
        if meta.get("deletionTimestamp"):
            await self._terminate(pod, running)
            return
        if (
            running is None
            and status.get("phase") in (None, "Pending")
            and not status.get("containerStatuses")
        ):
            await self._start(pod)

    async def _bind(self, meta: JSON) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            await self.core.create_namespaced_binding(meta["namespace"], body, _preload_content=False)
            log.info("bound pod %s/%s", meta["namespace"], meta["name"])
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- start -----------------------------------------------------------------------------
    async def _start(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        folder = self.state_dir / "pods" / f"{ns}_{name}_{uid[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        pp = PodProcess(uid, ns, name, folder)
        self.pods[uid] = pp
        container = spec["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if not container.get("command"):
            await self._patch_status(
                pp,
                self._terminated_status(
                    pod,
                    container,
                    128,
                    "ProcessKubeletNeedsCommand",
                    "the process kubelet runs a container's `command`; this container has none",
                ),
            )
            return
        try:
            mounts = await self._materialize_volumes(pod, container, folder)
            env = await self._container_env(pod, container)
        except Exception as exc:
            log.exception("pod %s/%s: setup failed", ns, name)
            await self._patch_status(
                pp, self._terminated_status(pod, container, 128, "CreateContainerConfigError", str(exc))
            )
            return
        env = {k: _remap(v, mounts) for k, v in env.items()}
        command = [_remap(a, mounts) for a in command]
        log_file = (folder / f"{container['name']}.log").open("ab")
        try:
            pp.proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                cwd=folder,
            )
        except OSError as exc:
            log_file.close()
            log.warning("pod %s/%s: exec failed: %s", ns, name, exc)
            await self._patch_status(
                pp, self._terminated_status(pod, container, 127, "StartError", f"exec failed: {exc}")
            )
            return
        log_file.close()
        pp.started_at = now_iso()
        (folder / "pid").write_text(str(pp.proc.pid))
        log.info("started pod %s/%s pid %d: %s", ns, name, pp.proc.pid, command)
        await self._patch_status(pp, self._running_status(pod, container, pp))
        pp.waiter = asyncio.create_task(self._wait_exit(pod, container, pp))

    async def _wait_exit(self, pod: JSON, container: JSON, pp: PodProcess) -> None:
        assert pp.proc is not None
        code = await pp.proc.wait()
        pp.exit_code = code
        pp.exited.set()
        log.info("pod %s/%s exited with %d", pp.namespace, pp.name, code)
        if code < 0:
            code = 128 + (-code)  # killed by a signal, reported as a shell would
        reason = "Completed" if code == 0 else "Error"
        with contextlib.suppress(ApiException):
            await self._patch_status(pp, self._terminated_status(pod, container, code, reason, "", pp))

    # -- status ----------------------------------------------------------------------------
    def _conditions(self, ready: bool) -> list[JSON]:
        t = now_iso()
        flag = "True" if ready else "False"
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": t},
            {"type": "Ready", "status": flag, "lastTransitionTime": t},
        ]

    def _running_status(self, pod: JSON, container: JSON, pp: PodProcess) -> JSON:
        assert pp.proc is not None
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pp.started_at,
            "conditions": self._conditions(True),
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "containerID": f"process://{pp.proc.pid}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": pp.started_at}},
                }
            ],
        }

    def _terminated_status(
        self, pod: JSON, container: JSON, code: int, reason: str, message: str, pp: PodProcess | None = None
    ) -> JSON:
        term: JSON = {"exitCode": code, "reason": reason, "finishedAt": now_iso()}
        if message:
            term["message"] = message
        cs: JSON = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": term},
        }
        if pp is not None and pp.proc is not None:
            cs["containerID"] = f"process://{pp.proc.pid}"
            term["startedAt"] = pp.started_at
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": self._conditions(False),
            "containerStatuses": [cs],
        }

    async def _patch_status(self, pp: PodProcess, status: JSON) -> None:
        await self.core.patch_namespaced_pod_status(
            pp.name, pp.namespace, {"status": status}, _content_type="application/merge-patch+json"
        )

    # -- termination -----------------------------------------------------------------------
    async def _terminate(self, pod: JSON, pp: PodProcess | None) -> None:
        meta = pod["metadata"]
        if pp is not None and pp.proc is not None and pp.exit_code is None:
            if not pp.terminating:
                pp.terminating = True
                grace = meta.get("deletionGracePeriodSeconds")
                grace = 30 if grace is None else int(grace)
                log.info("pod %s/%s: SIGTERM, grace %ss", pp.namespace, pp.name, grace)
                pp.signal_group(signal.SIGTERM)
                try:
                    await asyncio.wait_for(pp.exited.wait(), timeout=grace)
                except TimeoutError:
                    log.info("pod %s/%s: grace over, SIGKILL", pp.namespace, pp.name)
                    pp.signal_group(signal.SIGKILL)
                    await pp.exited.wait()
            else:
                return
        elif pp is not None and pp.waiter is not None:
            await pp.exited.wait()
        # a terminating pod whose container has stopped: finalize the deletion
        try:
            await self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        self.pods.pop(meta["uid"], None)

    async def _on_deleted(self, uid: str) -> None:
        pp = self.pods.pop(uid, None)
        if pp is not None and pp.exit_code is None:
            log.info("pod %s/%s removed from the API: SIGKILL", pp.namespace, pp.name)
            pp.signal_group(signal.SIGKILL)
        self.locks.pop(uid, None)

    def kill_all(self) -> None:
        for pp in self.pods.values():
            pp.signal_group(signal.SIGKILL)

    # -- env and volumes -------------------------------------------------------------------
    async def _container_env(self, pod: JSON, container: JSON) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
        host, _, port = self.api_server.removeprefix("https://").rpartition(":")
        env.update(
            HOSTNAME=pod["metadata"]["name"],
            KUBERNETES_SERVICE_HOST=host,
            KUBERNETES_SERVICE_PORT=port,
        )
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = await self._configmap_data(
                    ns, src["configMapRef"]["name"], src["configMapRef"].get("optional")
                )
            else:
                data = await self._secret_data(ns, src["secretRef"]["name"], src["secretRef"].get("optional"))
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
            elif "valueFrom" in item:
                value = await self._value_from(pod, item["valueFrom"])
                if value is not None:
                    env[item["name"]] = value
            else:
                env[item["name"]] = ""
        return env

    async def _value_from(self, pod: JSON, src: JSON) -> str | None:
        ns = pod["metadata"]["namespace"]
        if "fieldRef" in src:
            return _field(pod, src["fieldRef"]["fieldPath"])
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            return (await self._secret_data(ns, ref["name"], ref.get("optional"))).get(ref["key"])
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            return (await self._configmap_data(ns, ref["name"], ref.get("optional"))).get(ref["key"])
        if "resourceFieldRef" in src:
            return "0"
        return None

    async def _secret_data(self, ns: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            secret = await self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise RuntimeError(f"secret {ns}/{name}: {exc.reason}") from exc
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    async def _configmap_data(self, ns: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            cm = await self.core.read_namespaced_config_map(name, ns)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise RuntimeError(f"configmap {ns}/{name}: {exc.reason}") from exc
        return dict(cm.data or {})

    async def _materialize_volumes(self, pod: JSON, container: JSON, folder: Path) -> dict[str, Path]:
        """Write the container's mounted volumes; return mountPath -> local folder."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: dict[str, Path] = {}
        for vm in container.get("volumeMounts") or []:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise RuntimeError(f"volumeMount {vm['name']} names no volume")
            local = folder / "volumes" / vm["name"]
            if not local.exists():
                local.mkdir(parents=True)
                for fname, content in (await self._volume_files(pod, vol)).items():
                    path = local / fname
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                    path.chmod(0o600)
            target = local / vm["subPath"] if vm.get("subPath") else local
            mounts[vm["mountPath"].rstrip("/") or "/"] = target
        return mounts

    async def _volume_files(self, pod: JSON, vol: JSON) -> dict[str, bytes]:
        ns = pod["metadata"]["namespace"]
        if "emptyDir" in vol:
            return {}
        if "secret" in vol:
            src = vol["secret"]
            data = await self._secret_data(ns, src["secretName"], src.get("optional"))
            return _items(data, src.get("items"))
        if "configMap" in vol:
            src = vol["configMap"]
            data = await self._configmap_data(ns, src["name"], src.get("optional"))
            return _items(data, src.get("items"))
        if "downwardAPI" in vol:
            return {
                i["path"]: (_field(pod, i["fieldRef"]["fieldPath"]) or "").encode()
                for i in vol["downwardAPI"].get("items") or []
                if "fieldRef" in i
            }
        if "projected" in vol:
            files: dict[str, bytes] = {}
            for source in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    files[sat["path"]] = (await self._token(pod, sat)).encode()
                elif "secret" in source:
                    src = dict(source["secret"])
                    src["secretName"] = src.pop("name")
                    files.update(await self._volume_files(pod, {"name": vol["name"], "secret": src}))
                elif "configMap" in source or "downwardAPI" in source:
                    files.update(await self._volume_files(pod, {"name": vol["name"], **source}))
            return files
        raise RuntimeError(f"volume {vol['name']}: this volume type is not supported by the process kubelet")

    async def _token(self, pod: JSON, sat: JSON) -> str:
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": int(sat.get("expirationSeconds", 3600)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }
        if sat.get("audience"):
            spec["audiences"] = [sat["audience"]]
        resp = await self.core.create_namespaced_service_account_token(
            sa,
            meta["namespace"],
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        token: str = resp.status.token
        return token


def _items(data: dict[str, str], items: list[JSON] | None) -> dict[str, bytes]:
    if not items:
        return {k: v.encode() for k, v in data.items()}
    return {i["path"]: data[i["key"]].encode() for i in items if i["key"] in data}


def _field(pod: JSON, path: str) -> str | None:
    meta = pod["metadata"]
    simple: dict[str, str | None] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    for field in ("labels", "annotations"):
        prefix = f"metadata.{field}['"
        if path.startswith(prefix) and path.endswith("']"):
            value = (meta.get(field) or {}).get(path[len(prefix) : -2])
            return str(value) if value is not None else ""
    raise RuntimeError(f"fieldRef {path} is not supported by the process kubelet")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion of env values."""
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value


def _remap(value: str, mounts: dict[str, Path]) -> str:
    """Point a path under a volume's mountPath at the pod's local copy of the volume.

    A path that exists on this machine is left alone: with no mount table, an interpreter or
    checkout that happens to live under a mountPath (say /tmp) is the host's, not the pod's.
    A list of paths (``PYTHONPATH``) is looked at path by path.
    """
    if os.pathsep in value:
        return os.pathsep.join(_remap(part, mounts) for part in value.split(os.pathsep))
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path + "/"):
            if os.path.exists(value):
                return value
            return str(mounts[mount_path]) + value[len(mount_path) :]
    return value


async def amain(args: argparse.Namespace) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(args.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        kubelet = ProcessKubelet(api, args.node_name, Path(args.state_dir), cfg.host)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(kubelet.run())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            kubelet.kill_all()
            for task in (runner, stopper, *kubelet.tasks):
                task.cancel()
            await asyncio.gather(runner, stopper, *kubelet.tasks, return_exceptions=True)
            if runner.done() and not runner.cancelled() and runner.exception():
                raise runner.exception()  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description="process kubelet (test support)")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="process-node")
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
