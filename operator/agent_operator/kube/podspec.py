"""A runner pod from an AgentDeployment's template (pure).

The pod carries who it is and where the operator is, never the job's room token (that
arrives over the authenticated runner stream). Secure defaults fill whatever the template
leaves unset, so a plain template passes the Pod Security Standard ``restricted``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from agent_operator.runner_env import RESERVED
from agent_operator.spec import GROUP, KIND, VERSION, DeploymentSpec

LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_JOB_ID = f"{GROUP}/job-id"
LABEL_STATE = f"{GROUP}/state"  # idle (warm pool) or busy
LABEL_TEMPLATE = f"{GROUP}/template-hash"
ANNOTATION_ROOM = f"{GROUP}/room"
ANNOTATION_JOB_ID = f"{GROUP}/job-id"
ANNOTATION_DISPATCH_ID = f"{GROUP}/dispatch-id"
# the job's start request without its token (agent_operator.resume): the next operator sends it
ANNOTATION_START = f"{GROUP}/start-request"
# the job's latest checkpoint, sealed (kube.pod_checkpoint); not signed: it is authenticated itself
ANNOTATION_CHECKPOINT = f"{GROUP}/checkpoint"

TOKEN_DIR = "/var/run/secrets/agentoperator.dev/runner"  # noqa: S105 - a path, not a secret
TOKEN_VOLUME = "agentoperator-runner-token"  # noqa: S105 - a volume name
TMP_VOLUME = "agentoperator-tmp"
TOKEN_SECONDS = 3600
DEFAULT_GRACE_SECONDS = 15
RUNNER_UID = 65532  # the runner image's user (jobrunner/Dockerfile: USER 65532:65532)


@dataclasses.dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
    """Operator-wide settings baked into every runner pod."""

    operator_address: str  # host:port the runner dials
    token_audience: str
    tls_ca_pem: str = ""  # the CA that signed the operator's certificate; "": plaintext gRPC


@dataclasses.dataclass(frozen=True)
class JobInfo:
    job_id: str
    room: str
    dispatch_id: str
    start_request: str = ""  # encoded by agent_operator.resume; "" when too big to keep
    checkpoint: str = ""  # a restarted job's checkpoint, sealed by kube.pod_checkpoint


def job_annotations(job: JobInfo) -> dict[str, str]:
    annotations = {ANNOTATION_ROOM: job.room, ANNOTATION_JOB_ID: job.job_id}
    if job.dispatch_id:
        annotations[ANNOTATION_DISPATCH_ID] = job.dispatch_id
    if job.start_request:
        annotations[ANNOTATION_START] = job.start_request
    if job.checkpoint:
        annotations[ANNOTATION_CHECKPOINT] = job.checkpoint
    return annotations


def build_runner_pod(
    owner: Owner,
    spec: DeploymentSpec,
    runner: RunnerSettings,
    name: str,
    job: JobInfo | None,
) -> dict[str, Any]:
    """The pod for one job (``job`` given: cold path) or an idle warm-pool pod (``job`` None)."""
    template = copy.deepcopy(dict(spec.template))
    meta = template.get("metadata") or {}
    pod_spec: dict[str, Any] = template["spec"]

    labels = dict(meta.get("labels") or {})
    labels.update(
        {
            "app.kubernetes.io/name": "livekit-agent",
            "app.kubernetes.io/instance": owner.name,
            "app.kubernetes.io/managed-by": "livekit-agent-operator",
            LABEL_DEPLOYMENT: owner.name,
            LABEL_TEMPLATE: spec.template_hash(),
            LABEL_STATE: "busy" if job else "idle",
        }
    )
    annotations = dict(meta.get("annotations") or {})
    if job is not None:
        labels[LABEL_JOB_ID] = job.job_id
        annotations.update(job_annotations(job))

    pod_spec["restartPolicy"] = "Never"  # one job, one pod: never run a job twice
    pod_spec.setdefault("automountServiceAccountToken", False)
    pod_spec.setdefault("enableServiceLinks", False)
    pod_spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    pod_security = pod_spec.setdefault("securityContext", {})
    pod_security.setdefault("runAsNonRoot", True)
    pod_security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    _default_identity(pod_security, pod_spec["containers"][0].get("securityContext") or {})

    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in (TOKEN_VOLUME, TMP_VOLUME)]
    volumes.append(
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": runner.token_audience,
                            "expirationSeconds": TOKEN_SECONDS,
                            "path": "token",
                        }
                    }
                ]
            },
        }
    )
    volumes.append({"name": TMP_VOLUME, "emptyDir": {}})
    pod_spec["volumes"] = volumes

    container = pod_spec["containers"][0]
    _secure_container(container)
    # the spec's check refused reserved names in the template (runner_env); every one is set
    # here, the unused ones empty, as env wins over envFrom: no ConfigMap can supply one
    env = [e for e in container.get("env") or [] if str(e.get("name", "")) not in RESERVED]
    user_env = {e["name"] for e in env}
    wiring = [
        {"name": "AGENT_OPERATOR_ADDRESS", "value": runner.operator_address},
        {"name": "AGENT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AGENT_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "AGENT_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "AGENT_RUNNER_TOKEN_PATH", "value": f"{TOKEN_DIR}/token"},
        {"name": "AGENT_ENTRYPOINT", "value": spec.entrypoint},
        {"name": "AGENT_RUNTIME", "value": spec.runtime},
        {"name": "AGENT_OPERATOR_TLS_CA", "value": ""},
        {"name": "AGENT_OPERATOR_TLS_CA_PEM", "value": runner.tls_ca_pem},
    ]
    env = [*wiring, *env]
    if "TMPDIR" not in user_env:
        env.append({"name": "TMPDIR", "value": "/tmp"})  # noqa: S108 - the pod's own emptyDir
    container["env"] = env
    mounts = [
        m for m in container.get("volumeMounts") or [] if m.get("name") not in (TOKEN_VOLUME, TMP_VOLUME)
    ]
    mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
    if not any(m.get("mountPath") == "/tmp" for m in mounts):  # noqa: S108
        mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})  # noqa: S108
    container["volumeMounts"] = mounts
    for other in [*pod_spec["containers"][1:], *(pod_spec.get("initContainers") or [])]:
        _secure_container(other)

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }


def _default_identity(pod_security: dict[str, Any], runner_security: dict[str, Any]) -> None:
    """uid and gid 65532 unless the template says otherwise. Without ``runAsGroup`` the kubelet
    runs a container whose uid it sets with gid 0 (root's group), so the group follows the uid
    in effect for the runner container: a template that sets only ``runAsUser`` gets that as
    its group too."""
    if "runAsUser" not in pod_security and "runAsUser" not in runner_security:
        pod_security["runAsUser"] = RUNNER_UID
    if "runAsGroup" not in pod_security and "runAsGroup" not in runner_security:
        pod_security["runAsGroup"] = runner_security.get("runAsUser", pod_security.get("runAsUser"))


def _secure_container(container: dict[str, Any]) -> None:
    sc = container.setdefault("securityContext", {})
    sc.setdefault("allowPrivilegeEscalation", False)
    sc.setdefault("readOnlyRootFilesystem", True)
    sc.setdefault("runAsNonRoot", True)
    caps = sc.setdefault("capabilities", {})
    caps.setdefault("drop", ["ALL"])
