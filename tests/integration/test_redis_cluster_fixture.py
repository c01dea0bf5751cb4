"""The Redis Cluster fixture itself (tests/redis_cluster.py): a real cluster starts, serves keys
through redis-py's RedisCluster, moves a slot with its keys while a client writes into it, and
fails a master over, gracefully and by SIGKILL, with every key still readable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from harness import wait_until
from redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RedisClusterProcesses]:
    async with RedisClusterProcesses(tmp_path) as running:
        yield running


@pytest.fixture
async def client(cluster: RedisClusterProcesses) -> AsyncIterator[RedisCluster]:
    redis = cluster.client(decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


async def write_keys(client: RedisCluster, names: list[str]) -> None:
    for name in names:
        await client.set(name, f"value of {name}")


async def missing_keys(client: RedisCluster, names: list[str]) -> list[str]:
    return [name for name in names if await client.get(name) != f"value of {name}"]


async def test_starts_with_masters_and_replicas_and_serves_keys(
    cluster: RedisClusterProcesses, client: RedisCluster
) -> None:
    masters = await cluster.masters()
    assert len(masters) == 3
    assert cluster.seed_url == f"redis://127.0.0.1:{masters[0]}"
    assert await cluster.slot_owner(0) == masters[0]
    assert await cluster.slot_owner(16383) == masters[-1]
    for port in masters:
        assert len(await cluster.replicas_of(port)) == 1
    names = [f"key:{i}" for i in range(60)]
    await write_keys(client, names)
    assert await missing_keys(client, names) == []
    owners = {await cluster.slot_owner(key_slot(name.encode())) for name in names}
    assert owners == set(masters)


async def test_migrates_a_slot_while_a_client_writes_into_it(
    cluster: RedisClusterProcesses, client: RedisCluster
) -> None:
    slot = key_slot(b"{moved}")
    before = [f"{{moved}}:old:{i}" for i in range(25)]
    await write_keys(client, before)
    source = await cluster.slot_owner(slot)
    target = next(port for port in await cluster.masters() if port != source)

    during: list[str] = []
    migrated = asyncio.Event()
    while_migrating: list[str] = []

    async def migrating() -> bool:
        nodes = await cluster.node(source).command("CLUSTER", "NODES")
        return f"[{slot}->-".encode() in nodes

    async def writer() -> None:
        await wait_until(migrating, 10, f"slot {slot} to be migrating")
        for i in range(40):
            name = f"{{moved}}:new:{i}"
            await client.set(name, f"value of {name}")
            during.append(name)
            if not migrated.is_set():
                while_migrating.append(name)
            await client.append(before[i % len(before)], "")  # a write to a key in transit
            await asyncio.sleep(0.005)

    async def migrate() -> int:
        try:
            return await cluster.migrate_slot(slot, target, batch=5, pause=0.05)
        finally:
            migrated.set()

    moved, _ = await asyncio.gather(migrate(), writer())

    # keys new to the slot went to the target (ASK) during the migration, never through MIGRATE
    assert while_migrating
    assert moved == len(before)
    assert await cluster.slot_owner(slot) == target
    assert await cluster.node(source).command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert (await cluster.node(target).command("CLUSTER", "COUNTKEYSINSLOT", slot)
            == len(before) + len(during))
    assert await missing_keys(client, before + during) == []


async def test_graceful_failover_keeps_every_key(
    cluster: RedisClusterProcesses, client: RedisCluster
) -> None:
    names = [f"key:{i}" for i in range(60)]
    await write_keys(client, names)
    old = await cluster.slot_owner(0)
    replica = (await cluster.replicas_of(old))[0]

    new = await cluster.failover(old, kill=False)

    assert new == replica
    assert await cluster.slot_owner(0) == new
    assert old not in await cluster.masters()
    assert await cluster.replicas_of(new) == [old]
    assert await missing_keys(client, names) == []


async def test_kill_failover_promotes_the_replica_and_the_old_master_rejoins(
    cluster: RedisClusterProcesses, client: RedisCluster
) -> None:
    names = [f"key:{i}" for i in range(60)]
    await write_keys(client, names)
    await cluster.wait_replicated()
    old = await cluster.slot_owner(0)
    replica = (await cluster.replicas_of(old))[0]

    started = time.monotonic()
    new = await cluster.failover(old, kill=True)
    took = time.monotonic() - started

    assert new == replica
    assert await cluster.slot_owner(0) == new
    assert old not in await cluster.masters()
    assert await missing_keys(client, names) == []
    print(f"kill failover took {took:.2f}s")  # shown with -s

    await cluster.restart(old)
    assert await cluster.replicas_of(new) == [old]
    assert old not in await cluster.masters()
    assert await missing_keys(client, names) == []
