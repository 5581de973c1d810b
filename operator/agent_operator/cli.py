"""The ``agent-operator`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from agent_operator import __version__

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
    run.add_argument(
        "--runner-bind",
        default=os.environ.get("AGENT_OPERATOR_RUNNER_BIND", "0.0.0.0:50051"),
        help="address the runner gRPC server listens on (default %(default)s)",
    )
    run.add_argument(
        "--runner-address",
        default=os.environ.get("AGENT_OPERATOR_RUNNER_ADDRESS", ""),
        help="host:port that runner pods dial to reach this operator (e.g. its Service); required",
    )
    run.add_argument(
        "--token-audience",
        default=os.environ.get("AGENT_OPERATOR_TOKEN_AUDIENCE", "agentoperator.dev/runner"),
        help="audience of the runner pods' ServiceAccount tokens (default %(default)s)",
    )
    run.add_argument(
        "--reattach-grace",
        type=float,
        default=float(os.environ.get("AGENT_OPERATOR_REATTACH_GRACE", "15")),
        help="seconds a running job waits for its runner to re-attach (default %(default)s)",
    )
    run.add_argument(
        "--metrics-bind",
        default=os.environ.get("AGENT_OPERATOR_METRICS_BIND", "0.0.0.0:8080"),
        help="address of /metrics, /healthz and /readyz (default %(default)s)",
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
    if not args.runner_address:
        parser.error("--runner-address (or AGENT_OPERATOR_RUNNER_ADDRESS) is required: runner pods dial it")
    from agent_operator.app import run_operator
    from agent_operator.logs import setup_logging
    from agent_operator.runtime import OperatorConfig

    setup_logging(args.log_level, json_lines=not args.plain_logs)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it from the environment
    config = OperatorConfig(
        runner_bind=args.runner_bind,
        runner_address=args.runner_address,
        token_audience=args.token_audience,
        reattach_grace=args.reattach_grace,
        kubeconfig=args.kubeconfig,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(config, args.namespace, args.metrics_bind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
