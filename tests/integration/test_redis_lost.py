"""Redis that lost its data: real y-websocket clients stay connected while Redis (without
persistence) restarts empty on the same port; the servers notice it, ask their clients for
their documents again, and a fresh client then sees everything the clients wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ysync.epoch import epoch_key
from ysync.streams import room_stream_key

from conftest import seconds
from harness import NodeClients, ServerProcess, running_server, wait_until
from redis_process import RedisProcess

pytestmark = [pytest.mark.anyio, pytest.mark.node]


@pytest.fixture
async def volatile_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server without persistence: :meth:`RedisProcess.restart` (SIGKILL) brings it
    back empty on the same port."""
    redis = RedisProcess(tmp_path)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.stop()


def server_env(redis: RedisProcess, prefix: str, **extra: str) -> dict[str, str]:
    return {"REDIS": redis.url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
            "YSYNC_WORKER_ENABLED": "no", "YSYNC_REDIS_TIMEOUT": "2", "LOG": "info", **extra}


def new_prefix() -> str:
    return f"ylost-{uuid.uuid4().hex[:12]}"


def loss_logged(server: ServerProcess, prefix: str) -> bool:
    return any("ERROR" in line and "Redis lost the data of prefix" in line and prefix in line
               for line in server.stderr_lines)


async def write_items(clients: NodeClients, name: str, count: int) -> dict[str, int]:
    written: dict[str, int] = {}
    for i in range(count):
        await clients.call("mapSet", name=name, key=f"{name}.{i}", value=i)
        written[f"{name}.{i}"] = i
    await clients.call("insertText", name=name, text=f"<{name}>")
    return written


async def has_everything(clients: NodeClients, name: str, items: Mapping[str, Any],
                         texts: list[str]) -> bool:
    state = await clients.get(name)
    return (all(state["map"].get(k) == v for k, v in items.items())
            and all(t in state["text"] for t in texts))


async def test_idle_clients_restore_what_they_wrote(
    volatile_redis: RedisProcess, clients: NodeClients
) -> None:
    prefix = new_prefix()
    env = server_env(volatile_redis, prefix)
    async with running_server(env) as a, running_server(env) as b:
        where = {"a1": a, "a2": a, "b1": b}
        for name, server in where.items():
            await clients.open(name, server.url, "kept")
        await clients.open("elsewhere", b.url, "second room")
        for name in [*where, "elsewhere"]:
            await clients.synced(name)
        items: dict[str, int] = {}
        for name in where:
            items.update(await write_items(clients, name, 20))
        other = await write_items(clients, "elsewhere", 5)
        texts = [f"<{name}>" for name in where]
        for name in where:  # everything reached Redis (and came back through it)
            await wait_until(lambda n=name: has_everything(clients, n, items, texts), 15,
                             f"{name} to hold every item before the loss")

        await volatile_redis.restart()
        await wait_until(lambda: _true(loss_logged(a, prefix) and loss_logged(b, prefix)), 30,
                         "both servers to log that Redis lost its data")
        await wait_until(lambda: _true(any(
            "asked" in line and "send their documents again" in line for line in a.stderr_lines)),
            10, "server a to ask its clients for their documents")

        await clients.open("fresh", a.url, "kept")
        await clients.open("fresh elsewhere", b.url, "second room")
        await clients.synced("fresh")
        await wait_until(lambda: has_everything(clients, "fresh", items, texts), 15,
                         "a fresh client to see every item the idle clients wrote")
        await wait_until(lambda: has_everything(clients, "fresh elsewhere", other,
                                                ["<elsewhere>"]), 15,
                         "a fresh client of the second room to see its items")
        # the idle clients stayed connected: what they wrote came back through the resync, not
        # through a reconnect of theirs
        assert {name: clients.closes(name) for name in where} == {name: [] for name in where}

    probe = aioredis.Redis.from_url(volatile_redis.url)
    try:  # the restored items are in the new Redis, and the marker was written again
        assert await probe.exists(room_stream_key(prefix, "kept")) == 1
        assert await probe.exists(epoch_key(prefix)) == 1
    finally:
        await probe.aclose()


async def test_a_busy_client_keeps_writing_through_the_loss(
    volatile_redis: RedisProcess, clients: NodeClients
) -> None:
    prefix = new_prefix()
    async with running_server(server_env(volatile_redis, prefix)) as server:
        await clients.open("busy", server.url, "busy room")
        await clients.open("idle", server.url, "busy room")
        await clients.synced("busy")
        await clients.synced("idle")
        idle_items = await write_items(clients, "idle", 10)
        written: dict[str, int] = {}
        stop = asyncio.Event()

        async def keep_writing() -> None:
            i = 0
            while not stop.is_set():
                await clients.call("mapSet", name="busy", key=f"busy.{i}", value=i)
                written[f"busy.{i}"] = i
                i += 1
                await asyncio.sleep(0.02)  # pacing: a person typing, not a flood

        writer = asyncio.create_task(keep_writing())
        try:
            await wait_until(lambda: _true(len(written) >= 20), 10, "a first burst of writes")
            await volatile_redis.restart()
            await wait_until(lambda: _true(loss_logged(server, prefix)), 30,
                             "the server to log that Redis lost its data")
            after_loss = len(written)
            await wait_until(lambda: _true(len(written) >= after_loss + 20), 10,
                             "more writes after the loss")
        finally:
            stop.set()
            await writer
        items = {**idle_items, **written}
        await clients.open("fresh", server.url, "busy room")
        await clients.synced("fresh")
        await wait_until(lambda: has_everything(clients, "fresh", items, ["<idle>"]), 20,
                         f"a fresh client to see all {len(items)} items")
        await wait_until(lambda: has_everything(clients, "idle", items, ["<idle>"]), 20,
                         "the idle client to see every item")


async def test_the_worker_persists_the_restored_documents(
    volatile_redis: RedisProcess, clients: NodeClients
) -> None:
    """With the worker in the server (memory storage, in the process), the restored stream is
    compacted like any other: persisted, trimmed and deleted, and a fresh client then gets
    every item from storage alone."""
    prefix = new_prefix()
    debounce = int(seconds(2) * 1000)  # no compaction before the loss, normally
    env = server_env(volatile_redis, prefix, YSYNC_WORKER_ENABLED="yes",
                     REDIS_TASK_DEBOUNCE=str(debounce), REDIS_MIN_MESSAGE_LIFETIME="0")
    key = room_stream_key(prefix, "persisted")
    probe = aioredis.Redis.from_url(volatile_redis.url)
    try:
        async with running_server(env) as server:
            await clients.open("writer", server.url, "persisted")
            await clients.synced("writer")
            items = await write_items(clients, "writer", 30)

            async def all_in_redis() -> bool:  # 31 updates, and awareness
                return bool(await probe.xlen(key) > 31)

            await wait_until(all_in_redis, 10, "the items in the room stream")
            await volatile_redis.restart()
            await probe.aclose()
            probe = aioredis.Redis.from_url(volatile_redis.url)  # its connection is gone
            await wait_until(lambda: _true(loss_logged(server, prefix)), 30,
                             "the server to log that Redis lost its data")
            loss = _loss_line(server, prefix)
            compacted_before = any(_compaction(line, key) for line in server.stderr_lines[:loss])

            async def compacted_and_gone() -> bool:
                after = [line for line in server.stderr_lines[loss:] if _compaction(line, key)]
                # storage lacked the items (the usual case): the restored stream is persisted
                done = any("persisted" in line for line in after) or (compacted_before and after)
                if not done:
                    return False
                # with a lifetime of 0, the next compaction trims everything
                return bool(await probe.xlen(key) == 0)

            await wait_until(compacted_and_gone, 30,
                             "the worker to persist the restored stream and trim it")
            await clients.open("fresh", server.url, "persisted")
            await clients.synced("fresh")  # the answer came from storage: the stream is empty
            assert await has_everything(clients, "fresh", items, ["<writer>"])
    finally:
        await probe.aclose()


def _compaction(line: str, key: str) -> bool:
    return "compacted" in line and key in line


def _loss_line(server: ServerProcess, prefix: str) -> int:
    for i, line in enumerate(server.stderr_lines):
        if "Redis lost the data of prefix" in line and prefix in line:
            return i
    return len(server.stderr_lines)


async def _true(value: bool) -> bool:
    return value
