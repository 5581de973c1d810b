"""The ``agent-operator`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent_operator import __version__


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
        default=None,
        help="serve AgentDeployments in this namespace (repeatable; default: all namespaces)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    print("agent-operator: `run` is not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
