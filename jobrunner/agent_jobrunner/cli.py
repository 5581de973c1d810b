"""The ``agent-jobrunner`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent_jobrunner import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-jobrunner",
        description=(
            "Job runner for a LiveKit agent pod: attaches to the operator, waits for its job, "
            "joins the room and runs the entrypoint. Configured by environment variables."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("agent-jobrunner: the runner is not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
