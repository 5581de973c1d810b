"""One deployment's use of ``kube.pod_trust``: sign the pods it makes, check the pods it finds.

A pod found after a restart (or met when its runner attaches) is taken as the deployment's
only when ``pod_trust.untrusted`` finds nothing wrong. An untrusted pod gets a Warning Event
(``PodNotTrusted``, once per pod) and a log line, and nothing else: it is not put in the
warm pool, its runner is not expected (the supervisor refuses it as an unknown pod), no room
token is minted for it, and it is not deleted either (a pod that is not ours, or whose record
was rewritten, is left for a person to look at). A job pod whose signature cannot be checked
yet (the LiveKit Secret unreadable at start) is read and checked again before its job is
resumed, and when it fails then, its job is failed and the pod (owned by the deployment, as
checked) deleted; an idle pod whose signature cannot be checked yet is replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from agent_jobrunner.protocol import pb
from agent_operator.kube import pod_checkpoint, pod_trust
from agent_operator.kube.pods import brief
from agent_operator.kube.podspec import LABEL_JOB_ID, JobInfo, Owner
from agent_operator.kube.secrets import Credentials
from agent_operator.supervisor import PodIdentity

log = logging.getLogger("agent_operator.deployment")

EventSink = Callable[[str, str, bool], None]  # (reason, message, warning)
Verdict = Literal["trusted", "untrusted", "unverified"]


class PodReader(Protocol):
    async def read(self, pod: PodIdentity) -> dict[str, object] | None: ...


class DeploymentTrust:
    def __init__(
        self,
        owner: Owner,
        fields: dict[str, str],
        event: EventSink,
        credentials: Callable[[], Credentials | None],
    ) -> None:
        self.owner = owner
        self.fields = fields
        self._event = event
        self._credentials = credentials  # the deployment's current LiveKit credentials
        self._distrusted: set[str] = set()  # pod uids already reported
        self._verified: set[str] = set()  # pod uids whose signature was checked when found

    @property
    def key(self) -> bytes | None:
        """The pod-record key, from the current credentials (None before they are read)."""
        credentials = self._credentials()
        return pod_trust.signing_key(credentials.api_secret) if credentials else None

    # -- what the deployment writes ---------------------------------------------------------
    def seal(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign a pod body before it is created (unsigned while there is no key: such a pod
        is not adopted by a later operator, which replaces or fails it instead)."""
        key = self.key
        if key is not None:
            pod_trust.sign_pod(key, body)
        return body

    def busy_signature(self, pod: PodIdentity, template_hash: str, job: JobInfo) -> str:
        key = self.key
        if key is None:
            return ""
        return pod_trust.busy_signature(
            key, pod.namespace, pod.name, self.owner.uid, self.owner.name, template_hash, job
        )

    def seal_checkpoint(self, checkpoint: pb.Checkpoint) -> str:
        """A job's checkpoint for its pod's annotation (``kube.pod_checkpoint``); "" while
        there are no credentials."""
        credentials = self._credentials()
        if credentials is None:
            return ""
        return pod_checkpoint.seal(
            pod_checkpoint.checkpoint_key(credentials.api_secret), self.owner, checkpoint
        )

    # -- what the deployment reads back -----------------------------------------------------
    def open_checkpoint(
        self, pod: Mapping[str, Any], job_id: str, credentials: Credentials | None = None
    ) -> pb.Checkpoint | None:
        """The job's checkpoint a found pod keeps, if it is genuine (None without credentials:
        ``credentials``, else the current ones)."""
        credentials = credentials or self._credentials()
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        sealed = annotations.get(pod_checkpoint.ANNOTATION_CHECKPOINT, "")
        if credentials is None or not sealed:
            return None
        key = pod_checkpoint.checkpoint_key(credentials.api_secret)
        opened = pod_checkpoint.open_sealed(key, self.owner, job_id, sealed)
        if opened is None:
            meta = pod.get("metadata") or {}
            fields = {**self.fields, "pod": f"{meta.get('namespace')}/{meta.get('name')}", "job_id": job_id}
            log.warning(
                "the checkpoint its pod keeps is not genuine (another job's, rewritten, or sealed "
                "with another secret): the job goes on without it",
                extra=fields,
            )
        return opened

    def check(self, pod: dict[str, Any], key: bytes | None) -> Verdict:
        """Whether a found pod may be taken up. A pool pod (no job) needs its signature checked
        now, else it is "unverified" (the caller replaces it: an idle pod has no call to lose);
        a job pod's is checked now when there is a key, else before its job is resumed."""
        meta: dict[str, Any] = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        why = pod_trust.untrusted(pod, self.owner.uid, key)
        if why:
            identity = PodIdentity(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))
            self.distrust(identity, why, labels.get(LABEL_JOB_ID, ""))
            return "untrusted"
        if key is None:
            return "trusted" if labels.get(LABEL_JOB_ID) else "unverified"
        self._verified.add(str(meta.get("uid", "")))
        return "trusted"

    def verified(self, pod: PodIdentity) -> bool:
        """The pod's signature was checked when it was found (no need to read it again)."""
        return pod.uid in self._verified

    def distrusts(self, pod: PodIdentity) -> bool:
        """The pod was found untrusted: the operator leaves it alone (no job, no deletion)."""
        return pod.uid in self._distrusted

    def forget(self, pod: PodIdentity) -> None:
        self._verified.discard(pod.uid)
        self._distrusted.discard(pod.uid)

    def distrust(self, pod: PodIdentity, why: str, job_id: str = "") -> None:
        if pod.uid in self._distrusted:
            return
        self._distrusted.add(pod.uid)
        fields = {**self.fields, "pod": str(pod), **({"job_id": job_id} if job_id else {})}
        log.warning("pod not trusted, left alone: %s", why, extra=fields)
        self._event(
            "PodNotTrusted",
            f"pod {pod.name} is not taken as this deployment's: {why}; it gets no job and no token",
            True,
        )

    async def recheck(self, pods: PodReader, pod: PodIdentity, key: bytes) -> str:
        """Why the pod, as it is now, may not be trusted ("" when it may)."""
        try:
            found = await pods.read(pod)
        except Exception as exc:
            return f"it could not be read: {brief(exc)}"
        if found is None:
            return "it is gone"
        return pod_trust.untrusted(found, self.owner.uid, key)
