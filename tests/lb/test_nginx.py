"""ysync behind a real nginx (deploy/nginx.conf as the docs recommend it, run by
scripts/cluster.py): real y-websocket clients connect through nginx to two ysync servers that
share one Redis, one worker and one filesystem storage. Clients land on both servers and sync;
a server killed (SIGKILL) or drained (SIGTERM, a rolling deploy) loses its clients to the other
server through nginx, and nothing anyone wrote is lost.

Skipped only when nginx is not installed (scripts/install installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import httpx
import pytest

from conftest import TIME_SCALE, seconds
from harness import NodeClients, burst, converged, items_of, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import cluster as lb  # noqa: E402

pytestmark = [
    pytest.mark.anyio, pytest.mark.node, pytest.mark.slow,
    pytest.mark.skipif(lb.find_nginx() is None,
                       reason="nginx is not installed (scripts/install: apt-get install -y nginx)"),
]

ROOM = "shared"
#: the window over which reconnects per second are counted (scaled with the drain period)
RATE_WINDOW = seconds(0.5)


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, *, redis_url: str | None = None, prefix: str = "y",
                          server_env: Mapping[int, Mapping[str, str]] | None = None,
                          ) -> AsyncIterator[lb.Cluster]:
    """Two servers behind nginx, a worker that compacts after 1 s, a filesystem storage; the
    Redis given, or one of the cluster's own. The processes' logs are printed on failure."""
    env = {"YSYNC_SERVER_DRAIN_PERIOD": "0", "REDIS_TASK_DEBOUNCE": "1000"}
    cluster = lb.Cluster(servers=2, redis_url=redis_url, prefix=prefix, env=env,
                         server_env=server_env, workdir=tmp_path / "cluster",
                         time_scale=TIME_SCALE)
    async with cluster:
        try:
            yield cluster
        except BaseException:
            for child in cluster.processes():
                print(f"--- {child.name} (pid {child.pid}, {child.log}):\n{child.log_tail()}")
            raise


async def open_through_nginx(clients: NodeClients, cluster: lb.Cluster,
                             names: list[str]) -> list[int]:
    """Open ``names`` on nginx's URL and wait until they synced and every server counts its
    clients; the clients per server."""
    for name in names:
        await clients.open(name, cluster.url, ROOM)
    for name in names:
        await clients.synced(name)

    async def counted() -> bool:
        return sum([await cluster.connections(i) for i in range(2)]) == len(names)

    await wait_until(counted, 10, f"the servers to count {len(names)} connections")
    return [await cluster.connections(i) for i in range(2)]


async def relayed(clients: NodeClients, reader: str, tag: str, at_least: int) -> bool:
    """``reader`` holds ``at_least`` items of the bursts tagged ``tag``."""
    keys = (await clients.get(reader))["map"]
    return sum(f".{tag}." in key for key in keys) >= at_least


async def close_all(clients: NodeClients, names: Iterable[str]) -> None:
    for name in names:
        await clients.call("close", name=name)


async def test_clients_through_nginx_land_on_both_servers_and_sync(
    tmp_path: Path, clients: NodeClients,
) -> None:
    """Six clients open one room through nginx: nginx spreads them over both servers (each
    server's ysync_connections gauge counts some), what each writes reaches all the others
    whichever server they landed on, a fresh client gets everything, and the worker persists
    the room to the storage."""
    async with running_cluster(tmp_path) as cluster:  # with a Redis of the cluster's own
        names = [f"c{i}" for i in range(6)]
        per_server = await open_through_nginx(clients, cluster, names)
        assert all(per_server), f"nginx sent every client to one server: {per_server}"
        await asyncio.gather(*(burst(clients, name, "a", 20, 5) for name in names))
        items = items_of(names, "a", 20)
        await wait_until(lambda: converged(clients, names, items), 20,
                         "every client to hold every item")
        await clients.open("fresh", cluster.url, ROOM)
        await clients.synced("fresh")
        await wait_until(lambda: converged(clients, [*names, "fresh"], items), 15,
                         "a fresh client to hold every item")
        assert not any(clients.closes(name) for name in names)

        storage = cluster.workdir / "storage"

        async def persisted() -> bool:
            return any(p.is_file() and not p.name.startswith(("%", "."))
                       for p in storage.rglob("*"))

        await wait_until(persisted, 20, f"the worker to persist a snapshot in {storage}")


async def test_server_killed_mid_session_its_clients_reconnect_to_the_other(
    tmp_path: Path, redis_url: str, prefix: str, clients: NodeClients,
) -> None:
    """Six writers through nginx, on both servers; one server is SIGKILLed in the middle of
    their bursts. Its clients reconnect through nginx, which skips the dead server (a refused
    connection marks it down and the upgrade goes to the next server) so no client ever gets
    an error from nginx; every writer and a fresh client end with every item."""
    async with running_cluster(tmp_path, redis_url=redis_url, prefix=prefix) as cluster:
        writers = [f"w{i}" for i in range(6)]
        per_server = await open_through_nginx(clients, cluster, writers)
        assert all(per_server), f"nginx sent every client to one server: {per_server}"
        victim, survivor = 1, 0
        count, pace = 150, 15
        bursts = [asyncio.create_task(burst(clients, name, "k", count, pace))
                  for name in writers]
        try:
            await wait_until(lambda: relayed(clients, writers[0], "k", len(writers) * count // 5),
                             15, "a first part of the bursts to reach every server")
            assert not any(task.done() for task in bursts), "the bursts ended too soon"
            killed_at = time.time()
            assert await cluster.kill(victim) == -signal.SIGKILL
            await asyncio.gather(*bursts)
        finally:
            for task in bursts:
                task.cancel()

        items = items_of(writers, "k", count)
        await wait_until(lambda: converged(clients, writers, items), 30,
                         f"every writer to hold all {len(items)} items")
        # exactly the victim's clients lost their connection, and all are on the survivor now
        assert sum(bool(clients.closes(name)) for name in writers) == per_server[victim]

        async def all_on_survivor() -> bool:
            return await cluster.connections(survivor) == len(writers)

        await wait_until(all_on_survivor, 10, "every client to be on the surviving server")
        await clients.open("fresh", cluster.url, ROOM)
        await clients.synced("fresh")
        await wait_until(lambda: converged(clients, [*writers, "fresh"], items), 15,
                         "a fresh client to hold every item")

        # nginx logs a WebSocket when it closes
        await close_all(clients, [*writers, "fresh"])
        addresses = cluster.server_addresses()

        def after_kill() -> list[lb.AccessEntry]:
            return [e for e in cluster.access_log() if e.start >= killed_at and e.uri != "/healthz"]

        async def logged() -> bool:
            return sum(e.status == 101 for e in after_kill()) >= per_server[victim] + 1

        await wait_until(logged, 10, "nginx to log the reconnects")
        entries = after_kill()
        refused = [e for e in entries if e.status != 101]
        assert refused == [], "nginx answered upgrades with errors: it did not skip the dead server"
        assert {e.upstream for e in entries} == {addresses[survivor]}
        tried_dead = sum(addresses[victim] in e.upstreams for e in entries)
        print(f"upgrades after the kill: {len(entries)}, {tried_dead} of them tried the dead "
              f"server first")


async def test_rolling_deploy_drains_each_server_with_1012_and_loses_nothing(
    tmp_path: Path, redis_url: str, prefix: str, clients: NodeClients,
) -> None:
    """A rolling deploy behind nginx: twelve clients (six writing) on two servers. Server 0
    gets SIGTERM in the middle of the bursts and drains (server.drain_period 3 s): /readyz fails
    at once, it takes no new upgrade (nginx sends them to server 1), closes its clients with
    1012 at random moments over the 3 s, and exits 0; it is started again, and once nginx
    routes to it, server 1 drains the same way with drain_period 0 (all at once). Every client
    ends with every item, and so does a fresh one. The reconnects the remaining server sees are
    spread: with drain_period 3 s no 0.5 s window holds every reconnect of the drained
    server's clients, with 0 one does. Both peak rates are printed."""
    spread = seconds(3.0)
    server_env = {0: {"YSYNC_SERVER_DRAIN_PERIOD": str(spread)},
                  1: {"YSYNC_SERVER_DRAIN_PERIOD": "0"}}
    async with running_cluster(tmp_path, redis_url=redis_url, prefix=prefix,
                               server_env=server_env) as cluster:
        names = [f"c{i}" for i in range(12)]
        writers = names[:6]
        per_server = await open_through_nginx(clients, cluster, names)
        assert all(per_server), f"nginx sent every client to one server: {per_server}"
        first_at, second_at = cluster.server_addresses()

        # --- server 0 drains over 3 s while the writers write
        count, pace = 150, 25
        bursts = [asyncio.create_task(burst(clients, name, "d1", count, pace))
                  for name in writers]
        try:
            await wait_until(lambda: relayed(clients, names[-1], "d1", len(writers) * 10), 15,
                             "a first part of the bursts to reach every client")
            assert not any(task.done() for task in bursts), "the bursts ended too soon"
            assert await _readiness(cluster.server(0)) == 200
            first_drain = time.time()
            cluster.send_signal(0, signal.SIGTERM)
            ready_failed = await _readiness_fails(cluster.server(0), within=1.0)
            assert await cluster.wait_exit(0, spread + 15) == 0
            await asyncio.gather(*bursts)
        finally:
            for task in bursts:
                task.cancel()
        items = items_of(writers, "d1", count)
        await wait_until(lambda: converged(clients, names, items), 30,
                         f"every client to hold all {len(items)} items after the first drain")
        closes_first = {name: list(clients.closes(name)) for name in names}

        async def all_on(index: int) -> bool:
            return await cluster.connections(index) == len(names)

        await wait_until(lambda: all_on(1), 10, "every client to be on server 1")

        # --- server 0 again; once nginx routes to it, server 1 drains at once
        await cluster.restart(0)
        await wait_until(lambda: _nginx_routes_to_empty_server(cluster), 10,
                         "nginx to send requests to the restarted server 0 (fail_timeout)")
        bursts = [asyncio.create_task(burst(clients, name, "d2", 60, 20)) for name in writers]
        try:
            await wait_until(lambda: relayed(clients, names[-1], "d2", len(writers) * 5), 15,
                             "a first part of the second bursts to reach every client")
            second_drain = time.time()
            cluster.send_signal(1, signal.SIGTERM)
            assert await cluster.wait_exit(1, 15) == 0
            await asyncio.gather(*bursts)
        finally:
            for task in bursts:
                task.cancel()
        items += items_of(writers, "d2", 60)
        await wait_until(lambda: converged(clients, names, items), 30,
                         "every client to hold every item after the second drain")
        await wait_until(lambda: all_on(0), 10, "every client to be on server 0")
        fresh_at = time.time()
        await clients.open("fresh", cluster.url, ROOM)
        await clients.synced("fresh")
        await wait_until(lambda: converged(clients, [*names, "fresh"], items), 15,
                         "a fresh client to hold every item")

        closes = {name: list(clients.closes(name)) for name in names}
        # nginx logs a WebSocket when it closes
        await close_all(clients, [*names, "fresh"])

        def upgrades(since: float, until: float) -> list[lb.AccessEntry]:
            return [e for e in cluster.access_log()
                    if e.status == 101 and since <= e.start < until]

        async def logged() -> bool:
            return len(upgrades(second_drain, fresh_at)) >= len(names)

        await wait_until(logged, 10, "nginx to log the reconnects")
        first = upgrades(first_drain, second_drain)
        second = upgrades(second_drain, fresh_at)

    # nothing was lost (above); now the drain itself
    assert ready_failed, "/readyz of the draining server did not fail within 1 s of SIGTERM"
    on_first = [name for name in names if closes_first[name]]
    assert len(on_first) == per_server[0]
    assert {name: closes_first[name] for name in on_first} == {n: [1012] for n in on_first}
    assert {name: closes[name][len(closes_first[name]):] for name in names} == \
        {name: [1012] for name in names}
    # a draining server takes no new upgrade: they all went to the other server
    assert {e.upstream for e in first} == {second_at}
    assert {e.upstream for e in second} == {first_at}
    assert len(first) == per_server[0] and len(second) == len(names)
    spread_peak = lb.peak_count((e.start for e in first), RATE_WINDOW)
    burst_peak = lb.peak_count((e.start for e in second), RATE_WINDOW)
    print(f"reconnects/s at the remaining server, peak over {RATE_WINDOW:g} s: "
          f"drain_period {spread:g} s: {spread_peak / RATE_WINDOW:g}/s ({spread_peak} of "
          f"{len(first)} clients); drain_period 0: {burst_peak / RATE_WINDOW:g}/s "
          f"({burst_peak} of {len(second)} clients)")
    # the share of a drained server's clients that reconnect within one window
    assert spread_peak / len(first) < burst_peak / len(second)
    assert burst_peak == len(second)


async def _readiness(server: lb.YsyncServer) -> int | None:
    """The status of ``server``'s /readyz (None: it does not answer)."""
    async with httpx.AsyncClient(timeout=seconds(1)) as http:
        try:
            return (await http.get(f"{server.http_url}/readyz")).status_code
        except httpx.HTTPError:
            return None


async def _readiness_fails(server: lb.YsyncServer, within: float) -> bool:
    """True once ``server``'s /readyz answers 503, within ``within`` (scaled) seconds."""
    deadline = time.monotonic() + seconds(within)
    while time.monotonic() < deadline:
        if await _readiness(server) == 503:
            return True
        await asyncio.sleep(0.02)
    return False


async def _nginx_routes_to_empty_server(cluster: lb.Cluster) -> bool:
    """nginx answered /metrics from a server with no connections (the restarted one)."""
    async with httpx.AsyncClient(timeout=seconds(2)) as http:
        response = await http.get(f"{cluster.http_url}/metrics")
    return response.status_code == 200 and \
        lb.parse_metrics(response.text).get("ysync_connections") == 0
