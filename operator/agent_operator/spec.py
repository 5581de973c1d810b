"""AgentDeployment spec, parsed into typed values (pure; the API server already applied the
schema's defaults and validation, this is the operator's own check and conversion)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from livekit.protocol import agent, models

from agent_jobrunner.protocol import pb
from agent_operator import runner_env, templates
from agent_operator.vocabulary import HeartbeatSettings

GROUP = "agentoperator.dev"
VERSION = "v1alpha1"
PLURAL = "agentdeployments"
KIND = "AgentDeployment"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ENTRYPOINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
AUTO_SUBSCRIBE = {
    "all": pb.AUTO_SUBSCRIBE_ALL,
    "none": pb.AUTO_SUBSCRIBE_NONE,
    "audioOnly": pb.AUTO_SUBSCRIBE_AUDIO_ONLY,
    "videoOnly": pb.AUTO_SUBSCRIBE_VIDEO_ONLY,
}
# livekit-server's default agents.target_load: it offers jobs only to workers below this load
DEFAULT_TARGET_LOAD = 0.7
WORKER_TYPES = {"room": agent.JT_ROOM, "publisher": agent.JT_PUBLISHER}
# the job runtime of the runner pods: ours (an ``entrypoint(ctx)`` against agent_jobrunner's
# JobContext), or livekit-agents' own (an AgentServer, WorkerOptions or entrypoint function)
RUNTIMES = ("native", "livekit-agents")


class SpecError(ValueError):
    """The spec cannot be served; the message is meant for a person."""


def parse_duration(value: str | float | int, field: str) -> float:
    """``"2500ms"``, ``"1m30s"``, or plain seconds, to seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise SpecError(f"{field}: {value!r} is not a duration (use e.g. 500ms, 30s, 10m, 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0:
        raise SpecError(f"{field}: must not be negative")
    return seconds


@dataclasses.dataclass(frozen=True)
class SecretRef:
    name: str
    api_key_key: str
    api_secret_key: str


@dataclasses.dataclass(frozen=True)
class FailoverSettings:
    """A running job whose pod dies is restarted on a new pod (``failover``)."""

    enabled: bool = True
    max_restarts: int = 2  # within ``window``; one more death fails the job
    window: float = 600.0
    # a running job's runner whose connection dropped and that has not re-attached within
    # this long is judged dead (``failover``); not in the CRD
    lost_after: float = 1.0


@dataclasses.dataclass(frozen=True)
class DeploymentSpec:
    livekit_url: str
    credentials: SecretRef
    target_load: float
    agent_name: str
    worker_type: str
    worker_namespace: str
    permissions: Mapping[str, bool]
    identity_template: str
    name_template: str
    participant_metadata: str
    participant_attributes: Mapping[str, str]
    entrypoint: str
    auto_subscribe: str
    max_concurrent_jobs: int
    drain_timeout: float
    heartbeat: HeartbeatSettings
    warm_pool_size: int
    warm_pool_max_idle_age: float
    template: Mapping[str, Any]
    runtime: str = "native"
    failover: FailoverSettings = FailoverSettings()

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> DeploymentSpec:
        livekit = spec.get("livekit") or {}
        url = str(livekit.get("url") or "")
        if not re.match(r"^(wss?|https?)://[^\s/]+", url):
            raise SpecError(f"livekit.url: {url!r} is not a ws://, wss://, http:// or https:// URL")
        ref = livekit.get("credentialsSecretRef") or {}
        if not ref.get("name"):
            raise SpecError("livekit.credentialsSecretRef.name is required")
        try:
            target_load = float(livekit.get("targetLoad", DEFAULT_TARGET_LOAD))
        except (TypeError, ValueError):
            raise SpecError(f"livekit.targetLoad: {livekit.get('targetLoad')!r} is not a number") from None
        if not 0 < target_load <= 1:
            raise SpecError(f"livekit.targetLoad: must be above 0 and at most 1, got {target_load}")
        entrypoint = str(spec.get("entrypoint") or "")
        if not _ENTRYPOINT.match(entrypoint):
            raise SpecError(f"entrypoint: {entrypoint!r} is not module:function")
        runtime = str(spec.get("runtime", "native"))
        if runtime not in RUNTIMES:
            raise SpecError(f"runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
        max_jobs = int(spec.get("maxConcurrentJobs", 10))
        if max_jobs < 1:
            raise SpecError(f"maxConcurrentJobs: must be at least 1, got {max_jobs}")
        worker_type = str(spec.get("workerType", "room"))
        if worker_type not in WORKER_TYPES:
            raise SpecError(f"workerType: {worker_type!r} is not one of {sorted(WORKER_TYPES)}")
        auto = str(spec.get("autoSubscribe", "all"))
        if auto not in AUTO_SUBSCRIBE:
            raise SpecError(f"autoSubscribe: {auto!r} is not one of {sorted(AUTO_SUBSCRIBE)}")
        hb = spec.get("heartbeat") or {}
        try:
            heartbeat = HeartbeatSettings(
                start_timeout=parse_duration(hb.get("startTimeout", "60s"), "heartbeat.startTimeout"),
                ping_interval=parse_duration(hb.get("pingInterval", "2500ms"), "heartbeat.pingInterval"),
                ping_timeout=parse_duration(hb.get("pingTimeout", "60s"), "heartbeat.pingTimeout"),
                high_ping_threshold=parse_duration(
                    hb.get("highPingThreshold", "500ms"), "heartbeat.highPingThreshold"
                ),
            )
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
        pool = spec.get("warmPool") or {}
        pool_size = int(pool.get("size", 0))
        if pool_size < 0 or pool_size > max_jobs:
            raise SpecError(
                f"warmPool.size: must be between 0 and maxConcurrentJobs ({max_jobs}), got {pool_size}"
            )
        template = spec.get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        if not containers:
            raise SpecError("template.spec.containers: at least one container (the runner) is required")
        try:
            runner_env.check_runner_env(containers[0])
        except runner_env.EnvError as exc:
            raise SpecError(str(exc)) from None
        participant = spec.get("participant") or {}
        identity_template = str(participant.get("identityTemplate") or "agent-{job_id}")
        name_template = str(participant.get("nameTemplate") or "")
        for field, text in (("identityTemplate", identity_template), ("nameTemplate", name_template)):
            try:
                templates.check(text)
            except templates.TemplateError as exc:
                raise SpecError(f"participant.{field}: {exc}") from None
        perms = spec.get("permissions") or {}
        failover = spec.get("failover") or {}
        max_restarts = int(failover.get("maxRestarts", 2))
        if max_restarts < 0:
            raise SpecError(f"failover.maxRestarts: must not be negative, got {max_restarts}")
        return cls(
            livekit_url=url,
            credentials=SecretRef(
                name=str(ref["name"]),
                api_key_key=str(ref.get("apiKeyKey", "api-key")),
                api_secret_key=str(ref.get("apiSecretKey", "api-secret")),
            ),
            target_load=target_load,
            agent_name=str(spec.get("agentName", "")),
            worker_type=worker_type,
            worker_namespace=str(spec.get("namespace", "")),
            permissions={
                "can_publish": bool(perms.get("canPublish", True)),
                "can_subscribe": bool(perms.get("canSubscribe", True)),
                "can_publish_data": bool(perms.get("canPublishData", True)),
                "can_update_metadata": bool(perms.get("canUpdateMetadata", False)),
                "hidden": bool(perms.get("hidden", False)),
            },
            identity_template=identity_template,
            name_template=name_template,
            participant_metadata=str(participant.get("metadata") or ""),
            participant_attributes=dict(participant.get("attributes") or {}),
            entrypoint=entrypoint,
            auto_subscribe=auto,
            max_concurrent_jobs=max_jobs,
            drain_timeout=parse_duration(spec.get("drainTimeout", "10m"), "drainTimeout"),
            heartbeat=heartbeat,
            warm_pool_size=pool_size,
            warm_pool_max_idle_age=parse_duration(pool.get("maxIdleAge", "30m"), "warmPool.maxIdleAge"),
            template=template,
            runtime=runtime,
            failover=FailoverSettings(
                enabled=bool(failover.get("enabled", True)),
                max_restarts=max_restarts,
                window=parse_duration(failover.get("window", "10m"), "failover.window"),
            ),
        )

    def participant_permission(self) -> models.ParticipantPermission:
        p = self.permissions
        return models.ParticipantPermission(
            agent=True,
            can_publish=p["can_publish"],
            can_subscribe=p["can_subscribe"],
            can_publish_data=p["can_publish_data"],
            can_update_metadata=p["can_update_metadata"],
            hidden=p["hidden"],
        )

    def registration_key(self) -> tuple[object, ...]:
        """What LiveKit sees of the worker: a change here means registering anew."""
        return (
            self.livekit_url,
            self.credentials,
            self.agent_name,
            self.worker_type,
            self.worker_namespace,
            tuple(sorted(self.permissions.items())),
        )

    def template_hash(self) -> str:
        """Identifies the pod template (and what is baked into pods from the spec)."""
        material: dict[str, Any] = {"template": self.template, "entrypoint": self.entrypoint}
        if self.runtime != "native":  # so the hash of existing (native) pods stays what it was
            material["runtime"] = self.runtime
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:10]


def parse_spec(spec: Mapping[str, Any]) -> tuple[DeploymentSpec | None, str]:
    """The parsed spec, or None and why it is invalid."""
    try:
        return DeploymentSpec.parse(spec), ""
    except SpecError as exc:
        return None, str(exc)
