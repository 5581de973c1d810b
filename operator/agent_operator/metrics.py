"""Prometheus metrics of the operator (prefix ``agent_operator_``).

Labelled by the AgentDeployment's namespace and name, never by job, room or pod (their
number is unbounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

DEPLOYMENT_LABELS = ("namespace", "deployment")

RUNNER_ATTACH_FAILURES = Counter(
    "agent_operator_runner_attach_failures_total",
    "Runner attach attempts refused, by reason: auth (credential refused), auth_unavailable "
    "(TokenReview unreachable or throttled; the runner retries), protocol, unknown_pod, handover "
    "(a pod this operator does not know, while it hands over; the runner retries), stream_error, "
    "overload (too many streams not yet attached), peer_limit (too many of them from one address), "
    "duplicate_session (a second stream for a pod whose stream still answers pings).",
    ["reason"],
)
RUNNERS_ATTACHED = Gauge(
    "agent_operator_runners_attached",
    "Runner streams currently attached.",
    DEPLOYMENT_LABELS,
)
HEARTBEAT_RTT = Histogram(
    "agent_operator_heartbeat_rtt_seconds",
    "Round trip of a Ping/Pong on the runner stream.",
    DEPLOYMENT_LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
HEARTBEAT_HIGH_PINGS = Counter(
    "agent_operator_heartbeat_high_ping_total",
    "Pongs later than the high-ping threshold.",
    DEPLOYMENT_LABELS,
)
HEARTBEAT_TIMEOUTS = Counter(
    "agent_operator_heartbeat_timeouts_total",
    "Runners found unresponsive (no pong within the ping timeout); their pods are deleted.",
    DEPLOYMENT_LABELS,
)
JOBS_ENDED = Counter(
    "agent_operator_jobs_ended_total",
    "Jobs ended, by outcome: success, failed (the entrypoint or the start failed, or the runner "
    "died), killed (unresponsive runner deleted), rejected (assigned, but never reached a runner: "
    "the pod could not be created or vanished first).",
    (*DEPLOYMENT_LABELS, "outcome"),
)
JOB_POD_FAILURES = Counter(
    "agent_operator_job_pod_failures_total",
    "Jobs failed by what their pod's status says (they end at once, not at a timeout), by reason: "
    "OOMKilled (a container over its memory limit), ErrImagePull, ImagePullBackOff, "
    "InvalidImageName, ErrImageNeverPull (the image cannot be pulled), Unschedulable (no node fits "
    "the pod), LivenessProbeFailed, StartupProbeFailed (the kubelet stopped the container for a "
    "failed probe).",
    (*DEPLOYMENT_LABELS, "reason"),
)
JOB_RESTARTS = Counter(
    "agent_operator_job_restarts_total",
    "Jobs restarted on a new pod after theirs died (failover), by cause: exited (the runner's "
    "container ended with the job running: SIGKILL, a crash), oom (OOMKilled), probe (a failing "
    "liveness or startup probe), unresponsive (no pong within the ping timeout), lost (the stream "
    "broke, the runner did not return, and the kubelet told nothing else of its pod), "
    "pod_deleted (eviction, node loss).",
    (*DEPLOYMENT_LABELS, "cause"),
)
JOB_RESTARTS_REFUSED = Counter(
    "agent_operator_job_restarts_refused_total",
    "Jobs whose pod died and that failover did not restart, by why: budget (failover.maxRestarts "
    "within failover.window spent), draining (the deployment is being deleted), unknown (its "
    "start request or the LiveKit credentials are not known here).",
    (*DEPLOYMENT_LABELS, "why"),
)
CHECKPOINTS = Counter(
    "agent_operator_checkpoints_total",
    "Checkpoints of agents' state from runners, by result: taken, or refused as not_its_job (a "
    "runner wrote another job's), job_ended, too_large, not_json.",
    (*DEPLOYMENT_LABELS, "result"),
)
CHECKPOINT_BYTES = Histogram(
    "agent_operator_checkpoint_bytes",
    "Size of the agents' checkpoints taken (each one is the whole state: a voice agent's grows "
    "with its conversation); their sum over time is the stream bandwidth they cost.",
    DEPLOYMENT_LABELS,
    buckets=(256, 1024, 4096, 8192, 16384, 32768),
)
PREWARM_FAILURES = Counter(
    "agent_operator_prewarm_failures_total",
    "Runners whose agent could not be loaded or prewarmed (its import or setup_fnc raised, or the "
    "prewarm outlasted its timeout); their pods take no job and are replaced.",
    DEPLOYMENT_LABELS,
)
POOL_POD_FAILURES = Counter(
    "agent_operator_pool_pod_failures_total",
    "Idle pool pods that could never serve, deleted and replaced with backoff, by reason: "
    "PrewarmFailed, AttachTimeout (the runner never attached within the start timeout), "
    "ErrImagePull, ImagePullBackOff, InvalidImageName, ErrImageNeverPull, Unschedulable, OOMKilled.",
    (*DEPLOYMENT_LABELS, "reason"),
)
JOBS_STARTED = Counter(
    "agent_operator_jobs_started_total",
    "Jobs whose runner answered StartJobResponse (joined the room, entrypoint running), by path: "
    "warm, cold, or resumed (the start request sent again by the next operator after a restart).",
    (*DEPLOYMENT_LABELS, "path"),
)
JOB_DURATION = Histogram(
    "agent_operator_job_duration_seconds",
    "Started to ended, by outcome: how long calls last.",
    (*DEPLOYMENT_LABELS, "outcome"),
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
JOB_START_LATENCY = Histogram(
    "agent_operator_job_start_latency_seconds",
    "Assignment to the runner's StartJobResponse.",
    (*DEPLOYMENT_LABELS, "path"),
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0),
)
JOBS_ASSIGNED = Counter(
    "agent_operator_jobs_assigned_total",
    "Jobs LiveKit assigned to a deployment's worker.",
    DEPLOYMENT_LABELS,
)
JOBS_ACTIVE = Gauge(
    "agent_operator_jobs_active",
    "Jobs with a pod right now (starting or running).",
    DEPLOYMENT_LABELS,
)
MAX_CONCURRENT_JOBS = Gauge(
    "agent_operator_max_concurrent_jobs",
    "The deployment's spec.maxConcurrentJobs: at it, LiveKit offers the worker no more jobs.",
    DEPLOYMENT_LABELS,
)
AVAILABILITY_ANSWERS = Counter(
    "agent_operator_availability_answers_total",
    "Answers to LiveKit availability requests (answer yes/no, by reason).",
    (*DEPLOYMENT_LABELS, "answer", "reason"),
)
LEADER = Gauge(
    "agent_operator_leader",
    "1 while this operator process serves (holds the leader Lease); 0 while it stands by.",
)
WORKER_CONNECTED = Gauge(
    "agent_operator_worker_connected",
    "1 while the deployment's worker is registered with LiveKit.",
    DEPLOYMENT_LABELS,
)
WORKER_RECONNECTS = Counter(
    "agent_operator_worker_reconnects_total",
    "Worker connections to LiveKit lost (each is followed by a reconnect).",
    DEPLOYMENT_LABELS,
)
TASK_FAILURES = Counter(
    "agent_operator_task_failures_total",
    "Operator tasks that failed or stopped when they should run on (worker status updates, "
    "status writer, warm pool loop, background calls), by task; each is logged with its error.",
    ["task"],
)
KUBE_API_ERRORS = Counter(
    "agent_operator_kube_api_errors_total",
    "Kubernetes API calls that failed, by operation (create_pod, delete_pod, patch_pod, "
    "list_pods, patch_status, create_event, read_secret).",
    ["operation"],
)
POOL_IDLE = Gauge(
    "agent_operator_pool_idle_pods",
    "Warm pool pods attached and idle, ready for a job.",
    DEPLOYMENT_LABELS,
)
POOL_BUSY = Gauge(
    "agent_operator_pool_busy_pods",
    "Pods running a job.",
    DEPLOYMENT_LABELS,
)
POOL_TARGET = Gauge(
    "agent_operator_pool_target_pods",
    "Configured warm pool size (spec.warmPool.size); 0 when the deployment has no pool.",
    DEPLOYMENT_LABELS,
)
JOB_STARTS_BY_PATH = Counter(
    "agent_operator_job_placements_total",
    "Jobs placed on a pod, by path: warm (an idle pool pod) or cold (a pod created for the job).",
    (*DEPLOYMENT_LABELS, "path"),
)


OUTCOMES = ("success", "failed", "killed", "rejected")
PATHS = ("warm", "cold")
AVAILABILITY = (
    ("yes", "accepted"),
    ("no", "at_capacity"),
    ("no", "draining"),
    ("no", "not_registered"),
    ("no", "blocked"),
    ("no", "handover"),
)
ATTACH_FAILURE_REASONS = (
    "auth",
    "auth_unavailable",
    "protocol",
    "unknown_pod",
    "handover",
    "stream_error",
    "overload",
    "peer_limit",
    "duplicate_session",
)
KUBE_OPERATIONS = (
    "create_pod",
    "delete_pod",
    "patch_pod",
    "list_pods",
    "read_pod",
    "patch_status",
    "create_event",
    "read_secret",
)
_PLAIN = (
    RUNNERS_ATTACHED,
    HEARTBEAT_HIGH_PINGS,
    HEARTBEAT_TIMEOUTS,
    JOBS_ASSIGNED,
    JOBS_ACTIVE,
    MAX_CONCURRENT_JOBS,
    WORKER_CONNECTED,
    WORKER_RECONNECTS,
    POOL_IDLE,
    POOL_BUSY,
    POOL_TARGET,
    HEARTBEAT_RTT,
    PREWARM_FAILURES,
)
_BY_OUTCOME = (JOBS_ENDED, JOB_DURATION)
_BY_PATH = (JOBS_STARTED, JOB_START_LATENCY, JOB_STARTS_BY_PATH)

for _reason in ATTACH_FAILURE_REASONS:
    RUNNER_ATTACH_FAILURES.labels(_reason)
for _operation in KUBE_OPERATIONS:
    KUBE_API_ERRORS.labels(_operation)


def init_deployment(namespace: str, name: str) -> None:
    """Create a deployment's series at zero, so that ``rate()`` and ``increase()`` see the first
    failure as an increase (a counter that appears at 1 looks flat to Prometheus)."""
    for metric in _PLAIN:
        metric.labels(namespace, name)
    for metric in _BY_OUTCOME:
        for outcome in OUTCOMES:
            metric.labels(namespace, name, outcome)
    for metric in _BY_PATH:
        for path in PATHS:
            metric.labels(namespace, name, path)
    for answer, reason in AVAILABILITY:
        AVAILABILITY_ANSWERS.labels(namespace, name, answer, reason)


def forget_deployment(namespace: str, name: str) -> None:
    """Drop a deleted deployment's series (a stale ``worker_connected 0`` would page someone)."""
    for metric in (
        *_PLAIN,
        *_BY_OUTCOME,
        *_BY_PATH,
        AVAILABILITY_ANSWERS,
        POOL_POD_FAILURES,
        JOB_RESTARTS,
        JOB_RESTARTS_REFUSED,
        CHECKPOINTS,
        CHECKPOINT_BYTES,
    ):
        metric.remove_by_labels({"namespace": namespace, "deployment": name})


@contextmanager
def kube_call(operation: str, expected: tuple[int, ...] = ()) -> Iterator[None]:
    """Count a Kubernetes API call that raises, unless its HTTP status is an expected answer
    (a 404 on delete means the pod is already gone, not an error)."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "status", None) not in expected:
            KUBE_API_ERRORS.labels(operation).inc()
        raise
