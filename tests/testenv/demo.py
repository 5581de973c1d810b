"""`make demo`: start the local environment and show the operator.

Starts etcd, kube-apiserver, kube-controller-manager, the process kubelet and
livekit-server on loopback, prints how to reach them and the operator's help, then keeps
running until Ctrl-C (or exits at once with ``--oneshot``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.testenv.environment import TestEnvironment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--oneshot", action="store_true", help="stop right after showing everything")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agent-operator-demo-"))
    env = TestEnvironment(workdir)
    t0 = time.monotonic()
    env.start()
    try:
        assert env.kube is not None
        assert env.livekit is not None
        print(f"\nlocal environment up in {time.monotonic() - t0:.1f}s")
        print(f"  kube-apiserver  {env.kube.server}   (KUBECONFIG={env.kube.kubeconfig})")
        print(f"  livekit-server  {env.livekit.url}   (api key {env.livekit.api_key})")
        print(f"  logs            {workdir}\n")
        subprocess.run(["agent-operator", "--help"], check=True)
        if not args.oneshot:
            print("\nCtrl-C to stop.", flush=True)
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
