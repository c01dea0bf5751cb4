"""The appender batches appends into pipelines without reordering a connection's messages."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from ysync.appender import Appender
from ysync.errors import BusError
from ysync.streams import Layout, ensure_worker_group, worker_stream_key

pytestmark = [pytest.mark.anyio]


async def test_concurrent_appends_keep_each_senders_order(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_worker_group(client, worker_stream_key(prefix))
        appender = Appender(client, Layout(prefix), timeout=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(appender.run)

            async def sender(n: int) -> None:
                for i in range(50):
                    await appender.append(f"{prefix}:room:r{n % 5}:index", f"{n}:{i}".encode())

            async with anyio.create_task_group() as senders:
                for n in range(40):
                    senders.start_soon(sender, n)
            tg.cancel_scope.cancel()
        seen: dict[int, list[int]] = {}
        for room in range(5):
            for _id, fields in await client.xrange(f"{prefix}:room:r{room}:index"):
                n, i = map(int, fields[b"m"].split(b":"))
                seen.setdefault(n, []).append(i)
        assert seen == {n: list(range(50)) for n in range(40)}
        tasks = await client.xrange(worker_stream_key(prefix))
        assert sorted(f[b"compact"] for _i, f in tasks) == sorted(
            f"{prefix}:room:r{r}:index".encode() for r in range(5))
    finally:
        await client.aclose()


async def test_a_failed_append_raises_bus_error_for_its_sender_only(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_worker_group(client, worker_stream_key(prefix))
        await client.set(f"{prefix}:room:notastream:index", b"x")  # XADD on it fails
        appender = Appender(client, Layout(prefix), timeout=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(appender.run)
            with pytest.raises(BusError):
                await appender.append(f"{prefix}:room:notastream:index", b"m")
            await appender.append(f"{prefix}:room:fine:index", b"m")
            tg.cancel_scope.cancel()
        assert await client.xlen(f"{prefix}:room:fine:index") == 1
    finally:
        await client.aclose()


async def test_appends_go_on_after_redis_forgets_the_script(redis_url: str, prefix: str) -> None:
    """SCRIPT FLUSH (as a restart does): the refused appends (NOSCRIPT) are sent again once the
    script is loaded; none is lost or reported as failed."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_worker_group(client, worker_stream_key(prefix))
        appender = Appender(client, Layout(prefix), timeout=10)
        key = f"{prefix}:room:flushed:index"
        async with anyio.create_task_group() as tg:
            tg.start_soon(appender.run)
            await appender.append(key, b"before")
            await client.script_flush()
            async with anyio.create_task_group() as senders:
                for n in range(10):
                    senders.start_soon(appender.append, key, b"after %d" % n)
            tg.cancel_scope.cancel()
        messages = [fields[b"m"] for _id, fields in await client.xrange(key)]
        assert messages[0] == b"before"
        assert sorted(messages[1:]) == sorted(b"after %d" % n for n in range(10))
    finally:
        await appender.aclose()
        await client.aclose()
