"""A leader cut off from the API server, with a standby that can reach it.

The leader reaches the API server through a TCP proxy that the test cuts (its connections
reset, then refused). With a renew deadline (what the chart sets when it runs standbys) the
leader stops before the standby takes the Lease over: never two leaders. Without one (a
single replica, where nobody else could serve) it keeps serving through the cut, and stops
once it can see that another operator took the Lease.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devenv.environment import TestEnvironment
from devenv.kube import KubeAccess, write_kubeconfig
from devenv.kubeclient import eventually
from devenv.tcpproxy import TcpProxy
from tests.support.operator import OperatorProcess, leader_and_standby

pytestmark = pytest.mark.e2e

DEADLINE = 8  # seconds; the Lease lasts 15 and is renewed every 5


def logged_at(op: OperatorProcess, text: str) -> datetime.datetime:
    """When the operator first logged a line containing ``text``."""
    for line in op.log_text().splitlines():
        if line.startswith("{") and text in line:
            return datetime.datetime.fromisoformat(json.loads(line)["ts"])
    raise AssertionError(f"{text!r} not in the log:\n{op.tail()}")


@pytest.mark.parametrize("deadline", [DEADLINE, 0], ids=["renew-deadline", "no-deadline"])
async def test_a_leader_cut_off_from_the_api_server(
    deadline: int, kube: KubeAccess, ns: str, local_kubelet: TestEnvironment, tmp_path: Path
) -> None:
    if kube.admin is None or kube.ca_cert is None:
        pytest.skip("needs the local API server's admin credentials")
    target = urlsplit(kube.server)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 443)
    await proxy.start()
    behind = tmp_path / "behind-proxy.kubeconfig"
    write_kubeconfig(behind, f"https://127.0.0.1:{proxy.port}", kube.ca_cert, "admin", kube.admin)
    try:
        async with leader_and_standby(
            kube.kubeconfig,
            ns,
            local_kubelet.workdir / "logs",
            leader_kubeconfig=behind,
            leader_args=[f"--renew-deadline={deadline}"],
        ) as (leader, standby):
            await asyncio.sleep(1)  # a renewal or two through the proxy
            await proxy.cut()

            async def took_over() -> bool:
                return await standby.readyz() == "200 ready"

            await eventually(took_over, 60, "the standby leads")
            took = logged_at(standby, "took the leader Lease")
            if deadline:
                code = await leader.wait_exited(30)
                assert code == 1, leader.tail()
                stepped = logged_at(leader, "no renewal of the leader Lease")
                assert stepped < took, f"the leader stepped down at {stepped}, after the takeover at {took}"
                print(f"leader stepped down {(took - stepped).total_seconds():.1f}s before the takeover")
            else:
                await asyncio.sleep(3)
                assert leader.alive(), "without a deadline the leader keeps serving through the cut"
                await proxy.restore()  # it sees the new holder at its next renewal, and stops
                assert await leader.wait_exited(30) == 1, leader.tail()
                assert "held by b" in leader.log_text()
                assert "no renewal of the leader Lease" not in leader.log_text()
            assert standby.alive()
    finally:
        await proxy.close()
