"""``ysync serve --server-processes N``: N server processes share one port (SO_REUSEPORT) and
the supervisor's embedded Redis. Real processes, real y-websocket clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import seconds
from harness import (
    NodeClients,
    ServerProcess,
    burst,
    converged,
    http_get,
    items_of,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.node]


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "ysync serve"],
                           capture_output=True, text=True, timeout=10, check=False)
    return sorted(int(line) for line in found.stdout.split())


def connections_by_pid(port: int) -> dict[int, int]:
    """Established connections to ``port``, by the pid of the process that holds them."""
    listed = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                            capture_output=True, text=True, timeout=10, check=True)
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", listed.stdout):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


async def test_two_processes_share_the_port_and_the_embedded_redis(
    tmp_path: Path, clients: NodeClients,
) -> None:
    env = {"YSYNC_DATA_DIR": str(tmp_path / "data"), "REDIS": "",
           "YSYNC_SERVER_DRAIN_PERIOD": "1"}
    server = await ServerProcess(env, ["--server-processes", "2"]).start()
    try:
        assert server.proc is not None
        kids = children_of(server.proc.pid)
        assert len(kids) == 2, server.log_text()
        names = [f"c{i}" for i in range(20)]
        for name in names:
            await clients.open(name, server.url, "shared")
        for name in names:
            await clients.synced(name)
        spread = connections_by_pid(server.port)
        # the kernel spreads connections over both (all 20 on one: p = 2e-6)
        assert set(spread) == set(kids) and sum(spread.values()) == 20, spread
        await asyncio.gather(*(burst(clients, name, "a", 10, 5) for name in names[:4]))
        items = items_of(names[:4], "a", 10)
        await wait_until(lambda: converged(clients, names, items), 20,
                         "clients on both processes converge")
        status, _ = await http_get(server.url.replace("ws://", "http://") + "/readyz")
        assert status == 200

        # a process that dies is started again; its clients reconnect and nothing is lost
        victim = kids[0]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = children_of(server.proc.pid) if server.proc else []
            return len(now) == 2 and victim not in now

        await wait_until(replaced, 20, "the supervisor starts the killed process again")
        assert re.search(rf"server process \d \(pid {victim}\) exited with status -9",
                         server.log_text())
        await asyncio.gather(*(burst(clients, name, "b", 10, 5) for name in names[4:8]))
        items += items_of(names[4:8], "b", 10)
        await wait_until(lambda: converged(clients, names, items), 30,
                         "every client converges after the restart")

        # SIGTERM: every process drains (1012) and the supervisor exits 0 with them
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(server.proc.wait(), seconds(30))
        assert code == 0, server.log_text()
        assert children_of(server.proc.pid) == []

        async def told_to_reconnect() -> bool:
            return all(1012 in clients.closes(name) for name in names)

        await wait_until(told_to_reconnect, 10, "every client was closed with 1012")
    finally:
        await server.kill()
