"""ysync on a real Redis Cluster (3 masters, 3 replicas, started by the test): real y-websocket
clients on two servers sync rooms spread over the shards, the worker compacts them, and a slot
migration and master failovers (graceful, and by SIGKILL) during writes lose nothing."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from ysync.config import load_config
from ysync.control import publish_kick
from ysync.ops import clean_prefix
from ysync.server import CLOSE_PERMISSION_REVOKED
from ysync.streams import Layout

from conftest import seconds
from harness import NodeClients, ServerProcess, running_server, wait_until
from redis_cluster import RedisClusterProcesses
from worker_process import run_worker_once

pytestmark = [pytest.mark.anyio, pytest.mark.node, pytest.mark.slow]

SHARDS = 8


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RedisClusterProcesses]:
    async with RedisClusterProcesses(tmp_path / "cluster") as running:
        yield running


def cluster_env(cluster: RedisClusterProcesses, prefix: str, storage: Path, *,
                worker: bool) -> dict[str, str]:
    nodes = ",".join(url.removeprefix("redis://") for url in cluster.urls[:2])
    return {"REDIS": f"redis+cluster://{nodes}", "REDIS_PREFIX": prefix,
            "YSYNC_REDIS_CLUSTER_SHARDS": str(SHARDS), "YSYNC_STORAGE_KIND": "filesystem",
            "YSYNC_STORAGE_PATH": str(storage), "YSYNC_WORKER_ENABLED": "yes" if worker else "no",
            "REDIS_TASK_DEBOUNCE": "300", "REDIS_MIN_MESSAGE_LIFETIME": "200",
            "YSYNC_REDIS_TIMEOUT": "5", "LOG": "info"}


def layout() -> Layout:
    return Layout("unused", SHARDS)


def rooms_in_distinct_shards(count: int) -> list[str]:
    """Room names of ``count`` different shards."""
    rooms: dict[int, str] = {}
    i = 0
    while len(rooms) < count:
        name = f"room-{i}"
        rooms.setdefault(layout().shard_of(name), name)
        i += 1
    return list(rooms.values())


def slot_of(room: str) -> int:
    return key_slot(layout().tag(layout().shard_of(room)).encode())


async def write(clients: NodeClients, name: str, key: str, value: int) -> None:
    await clients.call("mapSet", name=name, key=key, value=value)


async def holds(clients: NodeClients, name: str, items: dict[str, int]) -> bool:
    state: dict[str, Any] = await clients.get(name)
    return all(state["map"].get(k) == v for k, v in items.items())


async def converge(clients: NodeClients, names: list[str], items: dict[str, int],
                   what: str, within: float = 30) -> None:
    for name in names:
        await wait_until(lambda n=name: holds(clients, n, items), within, f"{name} {what}")


async def stream_lengths(client: RedisCluster, prefix: str, rooms: list[str]) -> list[int]:
    own = Layout(prefix, SHARDS)
    return [int(await client.xlen(own.room_key(room))) for room in rooms]


def new_prefix() -> str:
    return f"ycl-{uuid.uuid4().hex[:10]}"


async def test_two_servers_sync_rooms_of_every_shard_and_the_worker_compacts(
    cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path
) -> None:
    prefix = new_prefix()
    storage = tmp_path / "storage"
    rooms = rooms_in_distinct_shards(6)
    async with running_server(cluster_env(cluster, prefix, storage, worker=True)) as a, \
            running_server(cluster_env(cluster, prefix, storage, worker=False)) as b:
        for room in rooms:
            await clients.open(f"{room}@a", a.url, room)
            await clients.open(f"{room}@b", b.url, room)
        for room in rooms:
            await clients.synced(f"{room}@a")
            await clients.synced(f"{room}@b")
        written: dict[str, dict[str, int]] = {room: {} for room in rooms}
        for i in range(5):
            for room in rooms:
                for side in ("a", "b"):
                    key = f"{side}{i}"
                    await write(clients, f"{room}@{side}", key, i)
                    written[room][key] = i
        for room in rooms:
            await converge(clients, [f"{room}@a", f"{room}@b"], written[room],
                           "to hold what both servers' clients wrote")

        # the rooms are spread over the masters, and each stream lies in its shard's slot
        probe = cluster.client()
        try:
            owners = {await cluster.slot_owner(slot_of(room)) for room in rooms}
            assert len(owners) >= 2
            # the worker persists and trims every stream (min message lifetime 200 ms)
            async def compacted() -> bool:
                lengths = await stream_lengths(probe, prefix, rooms)
                return all(length == 0 for length in lengths)

            await wait_until(compacted, 30, "the worker to compact and trim every room stream")
        finally:
            await probe.aclose()
        snapshots = list(storage.rglob("*"))
        assert [p for p in snapshots if p.is_file()], "no snapshot was persisted"

        for room in rooms:  # a late joiner reads the snapshot (the streams are empty now)
            await clients.open(f"{room}@late", b.url, room)
            await clients.synced(f"{room}@late")
            await converge(clients, [f"{room}@late"], written[room],
                           "(a late joiner) to hold everything from the snapshot")

        # operator commands work on the cluster: a kick reaches both servers (pub/sub is
        # broadcast to every node), and cleaning the prefix finds its keys on every master
        probe = cluster.client()
        try:
            await publish_kick(probe, prefix, rooms[0], None, window=60)
            for side in ("a", "b"):
                await wait_until(lambda s=side: _true(
                    CLOSE_PERMISSION_REVOKED in clients.closes(f"{rooms[0]}@{s}")), 15,
                    f"the kick to close the client on server {side}")
        finally:
            await probe.aclose()
    probe = cluster.client()
    try:
        assert await clean_prefix(probe, prefix) >= SHARDS  # the shard queues, at least
        assert [key async for key in probe.scan_iter(match=f"{prefix}:*")] == []
    finally:
        await probe.aclose()


async def _true(value: bool) -> bool:
    return value


async def keep_writing(clients: NodeClients, name: str, key: str, stop: asyncio.Event,
                       written: dict[str, int]) -> None:
    i = 0
    while not stop.is_set():
        await write(clients, name, f"{key}{i}", i)
        written[f"{key}{i}"] = i
        i += 1
        await asyncio.sleep(0.02)


async def writes_through(cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path,
                         disturb: Callable[[int], Awaitable[None]]) -> list[str]:
    """Clients on two servers write to a room while ``disturb(slot of the room)`` runs;
    afterwards both and a late joiner hold every write, and the clients still sync new writes.
    Returns the servers' log lines."""
    prefix = new_prefix()
    storage = tmp_path / "storage"
    room = rooms_in_distinct_shards(1)[0]
    async with running_server(cluster_env(cluster, prefix, storage, worker=True)) as a, \
            running_server(cluster_env(cluster, prefix, storage, worker=False)) as b:
        await clients.open("writer@a", a.url, room)
        await clients.open("writer@b", b.url, room)
        await clients.synced("writer@a")
        await clients.synced("writer@b")
        written: dict[str, int] = {}
        stop = asyncio.Event()
        writers = [asyncio.create_task(keep_writing(clients, "writer@a", "a", stop, written)),
                   asyncio.create_task(keep_writing(clients, "writer@b", "b", stop, written))]
        try:
            await asyncio.sleep(seconds(0.5))
            await disturb(slot_of(room))
            await asyncio.sleep(seconds(0.5))
        finally:
            stop.set()
            await asyncio.gather(*writers)
        assert len(written) > 20
        await converge(clients, ["writer@a", "writer@b"], written, "to hold every write", 45)
        await write(clients, "writer@a", "after", 1)
        await converge(clients, ["writer@b"], {"after": 1}, "to get a write made afterwards")
        await clients.open("late", b.url, room)
        await clients.synced("late")
        await converge(clients, ["late"], {**written, "after": 1}, "(a late joiner) to hold all")
        return [*a.stderr_lines, *b.stderr_lines]


async def test_a_slot_migration_during_writes_loses_nothing(
    cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path
) -> None:
    async def migrate(slot: int) -> None:
        source = await cluster.slot_owner(slot)
        target = next(port for port in await cluster.masters() if port != source)
        moved = await cluster.migrate_slot(slot, target, batch=1, pause=0.05)
        assert moved >= 1  # the room stream (and the shard's worker queue)
        assert await cluster.slot_owner(slot) == target

    lines = await writes_through(cluster, clients, tmp_path, migrate)
    assert any("now (was" in line for line in lines)  # the reader or appender moved


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
async def test_a_master_failover_during_writes_loses_nothing(
    cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path, kill: bool
) -> None:
    async def fail_over(slot: int) -> None:
        master = await cluster.slot_owner(slot)
        promoted = await cluster.failover(master, kill=kill)
        assert await cluster.slot_owner(slot) == promoted != master

    await writes_through(cluster, clients, tmp_path, fail_over)


async def test_a_cluster_needs_a_url_and_a_prefix_without_braces() -> None:
    from ysync.errors import ConfigError

    with pytest.raises(ConfigError, match="needs redis.url"):
        load_config(environ={"YSYNC_REDIS_CLUSTER": "yes"})
    with pytest.raises(ConfigError, match="cannot hold"):
        load_config(environ={"REDIS": "redis+cluster://127.0.0.1:7000", "REDIS_PREFIX": "a{b}",
                             "YSYNC_STORAGE_KIND": "memory"})
    with pytest.raises(ConfigError, match="redis.cluster"):
        load_config(environ={"REDIS": "unix:///tmp/redis.sock", "YSYNC_REDIS_CLUSTER": "yes",
                             "YSYNC_STORAGE_KIND": "memory"})


async def test_another_shard_count_on_the_same_prefix_is_refused(
    cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    prefix = new_prefix()
    env = cluster_env(cluster, prefix, tmp_path / "storage", worker=False)
    async with running_server(env) as first:  # records the layout: 8 shards
        probe = cluster.client()
        try:
            assert await probe.get(f"{prefix}:ysync:layout") == b"cluster shards=8"
        finally:
            await probe.aclose()
        assert first.url.startswith("ws://")
    other = {**env, "YSYNC_REDIS_CLUSTER_SHARDS": "4"}
    with pytest.raises(AssertionError, match="laid out with 'cluster shards=8'"):
        async with running_server(other):
            raise AssertionError("a server with another shard count started")
    status, log = await run_worker_once(other, tmp_path)
    assert status == 2, log
    assert "laid out with 'cluster shards=8'" in log


async def one_writes_two_reads(clients: NodeClients, servers: tuple[ServerProcess, ServerProcess],
                               room: str, items: dict[str, int], what: str) -> None:
    """Clients "one" (on the first server) and "two" (on the second) in ``room``; "one"
    writes ``items`` and "two" gets them."""
    for name, server in zip(("one", "two"), servers, strict=True):
        await clients.open(name, server.url, room)
        await clients.synced(name)
    for key, value in items.items():
        await write(clients, "one", key, value)
    await converge(clients, ["two"], items, f"to get the writes {what}")


async def test_a_master_that_restarts_empty_is_noticed_and_the_clients_restore_it(
    cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path
) -> None:
    """No failover: the master comes back at once, without its data (the cluster keeps
    nothing on disk), and its replica follows it into emptiness. The shard's epoch marker is
    gone with it: the servers ask their clients for their documents again."""
    prefix = new_prefix()
    room = rooms_in_distinct_shards(1)[0]
    env = cluster_env(cluster, prefix, tmp_path / "storage", worker=False)
    async with running_server(env) as a, running_server(env) as b:
        items = {f"k{i}": i for i in range(10)}
        await one_writes_two_reads(clients, (a, b), room, items, "before the loss")
        master = await cluster.slot_owner(slot_of(room))
        for replica in await cluster.replicas_of(master):  # however long the restart takes
            await cluster.node(replica).command("CONFIG", "SET", "cluster-replica-no-failover",
                                                "yes")
        await cluster.restart(master)
        await cluster.wait_healthy(30)
        assert await cluster.slot_owner(slot_of(room)) == master  # no failover happened
        await wait_until(lambda: _true(any(
            "Redis lost the data of prefix" in line for line in a.stderr_lines)), 30,
            "server a to notice that the shard's master lost its data")
        await clients.open("fresh", b.url, room)
        await clients.synced("fresh")
        await converge(clients, ["fresh"], items, "(a fresh client) to hold the restored items")


async def test_a_failover_to_a_replica_that_missed_the_last_writes_restores_them(
    cluster: RedisClusterProcesses, clients: NodeClients, tmp_path: Path
) -> None:
    """Redis replicates asynchronously: the replica is frozen while the master takes writes,
    then the master is killed and the replica takes over without them. The servers notice the
    failover and ask the shard's clients for their documents: nothing is lost."""
    prefix = new_prefix()
    room = rooms_in_distinct_shards(1)[0]
    env = cluster_env(cluster, prefix, tmp_path / "storage", worker=False)
    async with running_server(env) as a, running_server(env) as b:
        before = {f"before{i}": i for i in range(5)}
        await one_writes_two_reads(clients, (a, b), room, before, "first")
        await cluster.wait_replicated()
        master = await cluster.slot_owner(slot_of(room))
        (replica,) = await cluster.replicas_of(master)
        # frozen, and cut off: what the master takes now stays in the master (a frozen replica
        # would still read what its socket buffered)
        cluster.node(replica).send_signal(signal.SIGSTOP)
        try:
            await cluster.node(master).command("CLIENT", "KILL", "TYPE", "replica")
            lagged = {f"lagged{i}": i for i in range(5)}
            for key, value in lagged.items():
                await write(clients, "one", key, value)
            await converge(clients, ["two"], lagged, "to get the writes the replica missed")
            await cluster.node(master).kill()
        finally:
            cluster.node(replica).send_signal(signal.SIGCONT)

        async def promoted() -> bool:
            try:
                return await cluster.slot_owner(slot_of(room)) == replica
            except (AssertionError, OSError, RedisError):
                return False

        await wait_until(promoted, 30, "the replica to take over the slot")
        await wait_until(lambda: _true(any(
            "failed over" in line for line in [*a.stderr_lines, *b.stderr_lines])), 30,
            "a server to notice the failover")
        await clients.open("fresh", b.url, room)
        await clients.synced("fresh")
        await converge(clients, ["fresh"], {**before, **lagged},
                       "(a fresh client) to hold the writes the old master took with it")
