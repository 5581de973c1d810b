"""The ``agent-operator`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent_operator import __version__

if TYPE_CHECKING:
    from agent_operator.runtime import RunnerTLS

log = logging.getLogger("agent_operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-operator",
        description=(
            "Kubernetes operator for LiveKit voice agents: one worker registration per "
            "AgentDeployment, one short-lived pod per job."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve AgentDeployments in this namespace (repeatable; default: all namespaces)",
    )
    # each flag also reads AGENT_OPERATOR_<FLAG> from the environment (what the chart sets)
    flags: list[tuple[str, str, str]] = [
        ("--runner-bind", "0.0.0.0:50051", "address the runner gRPC server listens on (default %(default)s)"),
        (
            "--runner-address",
            "",
            "host:port that runner pods dial to reach this operator (e.g. its Service); required",
        ),
        (
            "--token-audience",
            "agentoperator.dev/runner",
            "audience of the runner pods' ServiceAccount tokens (default %(default)s)",
        ),
        ("--metrics-bind", "0.0.0.0:8080", "address of /metrics, /healthz and /readyz (default %(default)s)"),
        (
            "--runner-tls-cert",
            "",
            "PEM certificate of the runner gRPC server (enables TLS; re-read when the file changes)",
        ),
        ("--runner-tls-key", "", "PEM private key of --runner-tls-cert"),
        (
            "--leader-election-namespace",
            "",
            "namespace of the leader Lease (enables leader election and handover on SIGTERM;"
            " the operator's own namespace)",
        ),
        ("--leader-election-lease", "livekit-agent-operator", "leader Lease name (default %(default)s)"),
        (
            "--identity",
            os.environ.get("POD_NAME", "") or socket.gethostname(),
            "this process in the leader Lease (default: $POD_NAME, else the host name)",
        ),
        (
            "--leader-label-pod",
            "",
            "this operator's pod, in the Lease's namespace: labelled agentoperator.dev/leader=true"
            " while it leads and false otherwise, so that a Service can select the leader",
        ),
        (
            "--runner-tls-ca",
            "",
            "PEM CA bundle runner pods verify the operator's certificate with (required with TLS)",
        ),
        (
            "--runner-tls-secret",
            "",
            "TLS with a CA and certificate the operator makes itself and keeps in this Secret"
            " (reused on restart; instead of --runner-tls-cert/key/ca)",
        ),
        (
            "--runner-tls-secret-namespace",
            os.environ.get("POD_NAMESPACE", ""),
            "namespace of --runner-tls-secret (default: $POD_NAMESPACE)",
        ),
    ]
    for flag, default, help_text in flags:
        env = "AGENT_OPERATOR_" + flag.removeprefix("--").replace("-", "_").upper()
        run.add_argument(flag, default=os.environ.get(env, default), help=help_text)
    run.add_argument(
        "--reattach-grace",
        type=float,
        default=float(os.environ.get("AGENT_OPERATOR_REATTACH_GRACE", "15")),
        help="seconds a running job waits for its runner to re-attach (default %(default)s)",
    )
    run.add_argument(
        "--handover-timeout",
        type=float,
        default=float(os.environ.get("AGENT_OPERATOR_HANDOVER_TIMEOUT", "10")),
        help="on SIGTERM, seconds to wait for the next operator to serve (default %(default)s)",
    )
    run.add_argument(
        "--renew-deadline",
        type=float,
        default=float(os.environ.get("AGENT_OPERATOR_RENEW_DEADLINE", "0")),
        help="with standby replicas: stop leading after this many seconds without renewing the"
        " Lease, before a standby takes over (under 15); 0 (default): never, keep serving",
    )
    run.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig (default: in-cluster)"
    )
    run.add_argument("--log-level", default=os.environ.get("AGENT_OPERATOR_LOG_LEVEL", "INFO"))
    run.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.handover_timeout < 0:
        parser.error("--handover-timeout must not be negative")
    if args.leader_election_namespace and not args.identity:
        parser.error("--identity (or POD_NAME) is required with leader election")
    if args.leader_label_pod and not args.leader_election_namespace:
        parser.error("--leader-label-pod needs leader election (--leader-election-namespace)")
    if not args.runner_address:
        parser.error("--runner-address (or AGENT_OPERATOR_RUNNER_ADDRESS) is required: runner pods dial it")
    from agent_operator.app import run_operator
    from agent_operator.leadership import LEASE_SECONDS, ElectionConfig
    from agent_operator.logs import setup_logging
    from agent_operator.runtime import OperatorConfig

    if not 0 <= args.renew_deadline < LEASE_SECONDS:
        parser.error(f"--renew-deadline must be at least 0 and under the Lease's {LEASE_SECONDS:.0f}s")

    runner_tls = _runner_tls(parser, args)
    managed_tls = None
    if args.runner_tls_secret:
        from agent_operator.runtime import ManagedTLS

        if runner_tls is not None:
            parser.error("--runner-tls-secret and --runner-tls-cert/key/ca exclude each other")
        if not args.runner_tls_secret_namespace:
            parser.error("--runner-tls-secret needs --runner-tls-secret-namespace (or POD_NAMESPACE)")
        managed_tls = ManagedTLS(args.runner_tls_secret_namespace, args.runner_tls_secret)

    setup_logging(args.log_level, json_lines=not args.plain_logs)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it from the environment
    config = OperatorConfig(
        runner_bind=args.runner_bind,
        runner_address=args.runner_address,
        token_audience=args.token_audience,
        reattach_grace=args.reattach_grace,
        kubeconfig=args.kubeconfig,
        runner_tls=runner_tls,
        managed_tls=managed_tls,
    )
    election = None
    if args.leader_election_namespace:
        election = ElectionConfig(
            namespace=args.leader_election_namespace,
            name=args.leader_election_lease,
            identity=args.identity,
            handover_timeout=args.handover_timeout,
            label_pod=args.leader_label_pod,
            renew_deadline=args.renew_deadline,
        )
    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run_operator(config, args.namespace, args.metrics_bind, election))
    # the interpreter's last garbage collection at exit walks every object of the operator:
    # 10-14 s on a loaded node (py-spy showed the exit in gc_collect_main), which delays a
    # deploy's handover; all was closed by now, so none of it needs collecting
    gc.freeze()
    return code


def _runner_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RunnerTLS | None:
    """The TLS settings, checked now so that a bad file stops the operator with a clear error."""
    from agent_operator.runtime import RunnerTLS
    from agent_operator.supervisor.tls import CertificateError, ReloadingServerCertificate

    given = [bool(args.runner_tls_cert), bool(args.runner_tls_key), bool(args.runner_tls_ca)]
    if not any(given):
        return None
    if not all(given):
        parser.error("--runner-tls-cert, --runner-tls-key and --runner-tls-ca go together")
    cert, key, ca = Path(args.runner_tls_cert), Path(args.runner_tls_key), Path(args.runner_tls_ca)
    try:
        certificate = ReloadingServerCertificate(cert, key)  # before the event loop runs
    except CertificateError as exc:
        parser.error(f"--runner-tls-cert/--runner-tls-key cannot be used: {exc}")
    try:
        ca_pem = ca.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"--runner-tls-ca cannot be read: {exc}")
    if "-----BEGIN CERTIFICATE-----" not in ca_pem:
        parser.error(f"--runner-tls-ca {ca} holds no PEM certificate")
    return RunnerTLS(certificate, ca_pem)


if __name__ == "__main__":
    sys.exit(main())
