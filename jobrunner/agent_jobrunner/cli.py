"""The ``agent-jobrunner`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from agent_jobrunner import __version__
from agent_jobrunner.config import ConfigError, RunnerConfig
from agent_jobrunner.logforward import LogBuffer, setup_logging, teardown_logging
from agent_jobrunner.outcome import EXIT_CONFIG_ERROR, EXIT_INTERNAL_ERROR
from agent_jobrunner.runner import Runner

logger = logging.getLogger("agent_jobrunner")

ENVIRONMENT_HELP = """\
environment:
  AGENT_OPERATOR_ADDRESS          host:port of the operator's runner gRPC server (required)
  AGENT_POD_NAME, AGENT_POD_NAMESPACE, AGENT_POD_UID
                                  this pod, from the downward API (required)
  AGENT_ENTRYPOINT                package.module:attribute (required): native, an async def
                                  entrypoint(ctx); livekit-agents, an AgentServer, WorkerOptions
                                  or async def entrypoint(ctx: livekit.agents.JobContext)
  AGENT_RUNTIME                   native (default) or livekit-agents
  AGENT_RUNNER_TOKEN_PATH         the runner credential (default
                                  /var/run/secrets/agentoperator.dev/runner/token)
  AGENT_OPERATOR_TLS_CA           PEM CA of the operator; set: TLS, unset: plaintext
  AGENT_LOG_LEVEL                 DEBUG, INFO (default), WARNING, ERROR, CRITICAL
  AGENT_REATTACH_WINDOW_SECONDS   how long a running job survives without the operator (60)
  AGENT_SHUTDOWN_TIMEOUT_SECONDS  how long winding a job down may take (10)

exit codes:
  0 job done (returned, ctx.shutdown(), room gone, shutdown request, SIGTERM) or idle exit
  1 the job failed (entrypoint raised, bad entrypoint, room join failed)
  2 bad configuration   3 internal error   4 lost the operator for longer than the window
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-jobrunner",
        description=(
            "Job runner for a LiveKit agent pod: attaches to the operator, waits for its job, "
            "joins the room and runs the entrypoint. Configured by environment variables."
        ),
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        config = RunnerConfig.from_env(os.environ)
    except ConfigError as err:
        print(f"agent-jobrunner: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return run(config)


def run(config: RunnerConfig) -> int:
    """Run the runner to its end in a fresh event loop; returns the process exit code."""
    logs = LogBuffer()
    handlers = setup_logging(config.log_level, logs)
    runner = Runner(config, logs)
    with asyncio.Runner() as loop:
        try:
            code = loop.run(runner.run())
        except Exception:
            logger.exception("the runner failed")
            code = EXIT_INTERNAL_ERROR
        if any(not task.done() for task in runner.abandoned):
            # user code that ignores cancellation: waiting for it would never end
            logger.error("exiting with %d task(s) of the job still running", len(runner.abandoned))
            logging.shutdown()
            sys.stderr.flush()
            os._exit(code)
    teardown_logging(handlers)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
