"""How long the operator's interpreter takes to exit once its work is done.

    python -m tests.bench.operator_exit [--runs 3]

A child process imports what the operator imports, makes some garbage-collected objects
as a running operator would, prints the time and returns; the parent notes when the child
is gone. Once as ``agent-operator`` ends (``gc.freeze()`` before the interpreter's exit,
``agent_operator.cli``) and once without it. Prints each exit time; a handover waits for it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHILD = """
import gc, sys, time
import agent_operator.app, agent_operator.handlers, kopf, kubernetes_asyncio.client
import livekit.api, livekit.rtc
kept = [{"pod": {"n": i, "labels": {"a": str(i)}}} for i in range(200_000)]
if sys.argv[1] == "freeze":
    gc.freeze()
print(time.time(), flush=True)
"""


def exit_seconds(mode: str) -> float:
    child = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    gone = time.time()
    return gone - float(child.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for mode in ("freeze", "plain"):
        times = [exit_seconds(mode) for _ in range(args.runs)]
        print(
            f"{mode:6} exit: median {statistics.median(times):.2f}s "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)})"
        )


if __name__ == "__main__":
    main()
