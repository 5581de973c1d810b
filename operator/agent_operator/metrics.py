"""Prometheus metrics of the operator (prefix ``agent_operator_``).

Labelled by the AgentDeployment's namespace and name, never by job, room or pod (their
number is unbounded).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DEPLOYMENT_LABELS = ("namespace", "deployment")

RUNNER_ATTACH_FAILURES = Counter(
    "agent_operator_runner_attach_failures_total",
    "Runner attach attempts refused, by reason (auth, protocol, unknown_pod, stream_error).",
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
    "Jobs ended, by outcome (success, failed, killed).",
    (*DEPLOYMENT_LABELS, "outcome"),
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
AVAILABILITY_ANSWERS = Counter(
    "agent_operator_availability_answers_total",
    "Answers to LiveKit availability requests (answer yes/no, by reason).",
    (*DEPLOYMENT_LABELS, "answer", "reason"),
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
KUBE_API_ERRORS = Counter(
    "agent_operator_kube_api_errors_total",
    "Kubernetes API calls that failed, by operation.",
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
JOB_STARTS_BY_PATH = Counter(
    "agent_operator_job_placements_total",
    "Jobs placed on a pod, by path: warm (an idle pool pod) or cold (a pod created for the job).",
    (*DEPLOYMENT_LABELS, "path"),
)
