"""A ysync server killed in the middle of a burst of writes, and Redis restarted from its
append-only file: real processes (ysync servers, redis-server), real y-websocket clients.
Nothing the clients wrote is lost, and no restart of ysync is needed for Redis's."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ysync.config import StorageConfig
from ysync.epoch import epoch_key
from ysync.streams import room_stream_key

from harness import (
    NodeClients,
    ServerProcess,
    burst,
    converged,
    items_of,
    running_server,
    wait_until,
)
from redis_process import RedisProcess
from storage_fixtures import storage_env

pytestmark = [pytest.mark.anyio, pytest.mark.node]

#: items each client writes in its burst, and the ms between two of them
BURST = 150
PACE_MS = 15


async def test_server_killed_mid_burst_while_clients_write_on_two_servers(
    tmp_path: Path, redis_url: str, prefix: str, node_dir: Path,
) -> None:
    """Two servers, two writing clients on each; one server is killed (SIGKILL) in the middle
    of the bursts and started again on its port. Its clients reconnect and their resync sends
    what the dead server never appended and what they wrote while it was down: every client,
    and a fresh one on each server, ends with everything written."""
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_WORKER_ENABLED": "no",
           **storage_env(storage)}
    room = "burst"
    killed, survivor = ["a1", "a2"], ["b1", "b2"]
    writers = killed + survivor
    items = items_of(writers, "b", BURST)
    a = await ServerProcess(env).start()
    try:
        async with NodeClients(node_dir) as clients, running_server(env) as b:
            for name in writers:
                await clients.open(name, (a if name in killed else b).url, room)
            for name in writers:
                await clients.synced(name)
            bursts = [asyncio.create_task(burst(clients, name, "b", BURST, PACE_MS))
                      for name in writers]
            try:
                async def a_server_relaying() -> bool:  # a1's items reach b1 through Redis
                    keys = (await clients.get("b1"))["map"]
                    return sum(key.startswith("a1.") for key in keys) >= BURST // 4

                await wait_until(a_server_relaying, 15, "b1 to receive a first part of the burst")
                assert not any(task.done() for task in bursts), "the bursts ended too soon"
                assert await a.kill() == -signal.SIGKILL
                a = await ServerProcess(env, port=a.port).start()
                await asyncio.gather(*bursts)
            finally:
                for task in bursts:
                    task.cancel()

            await wait_until(lambda: converged(clients, writers, items), 30,
                             f"every writer to hold all {len(items)} items")
            # a1 and a2 lost their server and reconnected to it; b1 and b2 never lost theirs
            assert all(clients.closes(name) for name in killed)
            assert not any(clients.closes(name) for name in survivor)
            for name, server in (("fresh a", a), ("fresh b", b)):
                await clients.open(name, server.url, room)
                await clients.synced(name)
            await wait_until(lambda: converged(clients, [*writers, "fresh a", "fresh b"], items),
                             15, "fresh clients on both servers to hold every item")
    finally:
        await a.stop()


def loss_logged(server: ServerProcess) -> bool:
    return any("Redis lost the data of prefix" in line for line in server.stderr_lines)


async def test_redis_restarted_from_its_aof_while_clients_stay_connected(
    tmp_path: Path, node_dir: Path,
) -> None:
    """Redis with an append-only file (``appendfsync always``) stops (SIGTERM) and starts again
    on the same port and folder while a server and its clients stay up: the stream and the
    epoch marker come back from the AOF, the server reconnects by itself without reporting a
    loss, writes after the restart reach the other client, and a fresh client sees
    everything."""
    redis = RedisProcess(tmp_path / "redis", aof=True)
    await redis.start()
    prefix = f"yaof-{uuid.uuid4().hex[:12]}"
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    env = {"REDIS": redis.url, "REDIS_PREFIX": prefix, "YSYNC_WORKER_ENABLED": "no",
           "YSYNC_REDIS_TIMEOUT": "2", **storage_env(storage)}
    room = "kept"
    key = room_stream_key(prefix, room)
    names = ["alice", "bob"]
    try:
        async with NodeClients(node_dir) as clients, running_server(env) as server:
            for name in names:
                await clients.open(name, server.url, room)
            for name in names:
                await clients.synced(name)
            for name in names:
                await burst(clients, name, "r", 20, 0)
            before = items_of(names, "r", 20)
            await wait_until(lambda: converged(clients, names, before), 15,
                             "both clients to hold every item before the restart")
            async with _client(redis) as probe:
                length = await probe.xlen(key)
                marker = await probe.get(epoch_key(prefix))
            assert marker is not None

            assert await redis.stop(signal.SIGTERM) == 0
            await redis.start()
            async with _client(redis) as probe:
                assert await probe.xlen(key) == length  # every entry came back from the AOF
                # the server's next check of the marker (when its stream reader reconnects,
                # or the periodic one) finds the marker it knows
                checked = asyncio.Event()
                watcher = asyncio.create_task(_watch_for(redis, f"GET {epoch_key(prefix)}",
                                                         checked))
                try:
                    await wait_until(lambda: _true(checked.is_set()), 15,
                                     "the server to check the epoch marker")
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                assert await probe.get(epoch_key(prefix)) == marker

            for name in names:
                await clients.call("mapSet", name=name, key=f"{name}.after", value=-1)
            after = {f"{name}.after": -1 for name in names}

            async def everyone_has_the_new_writes() -> bool:
                return all([after.items() <= (await clients.get(n))["map"].items()
                            for n in names])

            await wait_until(everyone_has_the_new_writes, 20,
                             "writes after the restart to reach the other client")
            await clients.open("fresh", server.url, room)
            await clients.synced("fresh")
            state = await clients.get("fresh")
            assert state["map"] == {**{item: int(item.rsplit(".", 1)[1]) for item in before},
                                    **after}
            assert sorted(state["arr"]) == sorted(before)
            # the clients stayed connected (what the fresh client got came from Redis, not from
            # a resync of theirs), the server noticed the outage, and reported no loss
            assert {name: clients.closes(name) for name in names} == {n: [] for n in names}
            assert any("reading room streams again" in line for line in server.stderr_lines)
            assert not loss_logged(server), server.log_text()
    finally:
        await redis.stop()


def _client(redis: RedisProcess) -> aioredis.Redis:
    """A client of ``redis``, closed when the ``async with`` block ends."""
    return aioredis.Redis.from_url(redis.url)


async def _watch_for(redis: RedisProcess, command: str, seen: asyncio.Event) -> None:
    """Set ``seen`` once ``redis`` runs ``command`` (as MONITOR shows it)."""
    async with _client(redis) as client, client.monitor() as monitor:
        while (await monitor.next_command())["command"] != command:
            pass
        seen.set()


async def _true(value: bool) -> bool:
    return value
