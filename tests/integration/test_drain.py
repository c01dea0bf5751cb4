"""Readiness and a graceful stop of ``ysync serve`` (real processes, real y-websocket clients).

``/readyz`` is 200 only while Redis and the storage answer and the server is not draining.
On SIGTERM the server drains: readiness fails at once, new upgrades get 503, and the open
clients are closed with 1012 (service restart) at random moments over ``server.drain_period``;
then it exits 0. A second SIGTERM stops it at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ysync.config import StorageConfig

from harness import NodeClients, ServerProcess, http_get, running_server, seconds, wait_until
from redis_process import RedisProcess
from storage_fixtures import storage_env

pytestmark = [pytest.mark.anyio]


async def get(server: ServerProcess, path: str) -> tuple[int, str]:
    base = server.url.replace("ws://", "http://")
    return await http_get(f"{base}{path}")


def server_env(redis_url: str, prefix: str, storage: StorageConfig,
               **extra: str) -> dict[str, str]:
    return {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_WORKER_ENABLED": "no",
            **storage_env(storage), **extra}


async def test_readyz_follows_the_storage(tmp_path: Path, redis_url: str, prefix: str) -> None:
    """Ready while the storage folder is there; 503 naming the storage while it is not (a
    file in its place); ready again once it is back. /healthz (liveness) stays 200."""
    root = tmp_path / "storage"
    storage = StorageConfig(kind="filesystem", path=str(root))
    async with running_server(server_env(redis_url, prefix, storage)) as server:
        assert await get(server, "/readyz") == (200, "ready\n")
        root.rename(tmp_path / "away")
        root.write_text("not a folder")

        async def unready() -> bool:
            return await get(server, "/readyz") == (503, "storage unavailable\n")

        await wait_until(unready, 10, "/readyz fails while the storage is gone")
        assert await get(server, "/healthz") == (200, "ok\n")
        assert "readiness: storage does not answer" in server.log_text()
        root.unlink()
        (tmp_path / "away").rename(root)

        async def ready() -> bool:
            return await get(server, "/readyz") == (200, "ready\n")

        await wait_until(ready, 10, "/readyz is 200 again")


async def test_readyz_follows_redis(tmp_path: Path, prefix: str) -> None:
    """503 naming Redis while Redis is down, 200 once it is back."""
    redis = RedisProcess(tmp_path / "redis", aof=True)
    await redis.start()
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    try:
        async with running_server(server_env(redis.url, prefix, storage)) as server:
            assert (await get(server, "/readyz"))[0] == 200
            await redis.stop(signal.SIGTERM)

            async def unready() -> bool:
                return await get(server, "/readyz") == (503, "redis unavailable\n")

            await wait_until(unready, 15, "/readyz fails while Redis is down")
            # liveness does not depend on Redis: an outage must not restart the servers
            assert await get(server, "/livez") == (200, "alive\n")
            await redis.start()

            async def ready() -> bool:
                return (await get(server, "/readyz"))[0] == 200

            await wait_until(ready, 15, "/readyz is 200 again")
    finally:
        await redis.stop()


async def test_sigterm_drains_clients_with_1012_spread_over_the_drain_period(
    tmp_path: Path, redis_url: str, prefix: str, clients: NodeClients,
) -> None:
    period = 2.0
    count = 10
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    server = await ServerProcess(server_env(
        redis_url, prefix, storage, YSYNC_SERVER_DRAIN_PERIOD=str(period))).start()
    try:
        names = [f"c{i}" for i in range(count)]
        for name in names:
            await clients.open(name, server.url, "drain")
        for name in names:
            await clients.synced(name)
        assert server.proc is not None
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return await get(server, "/readyz") == (503, "draining\n")

        await wait_until(draining, 2, "/readyz fails at once")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.url}/drain", open_timeout=5):
                pass
        assert refused.value.response.status_code == 503
        code = await asyncio.wait_for(server.proc.wait(), seconds(period + 20))
        exited = time.monotonic()
        assert code == 0, server.log_text()

        async def all_closed() -> bool:
            return all(clients.closes(name) for name in names)

        await wait_until(all_closed, 10, "every client saw its connection close")
        assert {clients.closes(name)[0] for name in names} == {1012}
        # each client's first close (its reconnections to the draining server fail too)
        first: dict[str, float] = {}
        for event in clients.events:
            if event["event"] == "close" and event["name"] in names:
                first.setdefault(event["name"], event["received_at"])
        times = sorted(first.values())
        # ten closes at random within 2 s: spread out (all within 0.5 s: p < 1e-4), and none
        # after the drain period (plus the time a signal and a close frame take)
        assert times[-1] - times[0] > 0.5, times
        assert times[-1] - signalled < period + 1.5, times
        assert exited - signalled < period + 10
        assert "draining: closing 10 connection(s) with 1012 over 2.0 s" in server.log_text()
    finally:
        await server.kill()


async def test_a_second_sigterm_stops_at_once(
    tmp_path: Path, redis_url: str, prefix: str, clients: NodeClients,
) -> None:
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    server = await ServerProcess(server_env(
        redis_url, prefix, storage, YSYNC_SERVER_DRAIN_PERIOD="60")).start()
    try:
        for name in ("x", "y", "z"):
            await clients.open(name, server.url, "stop-now")
            await clients.synced(name)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return (await get(server, "/readyz"))[0] == 503

        await wait_until(draining, 2, "the drain began")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.proc.wait(), seconds(15))
        assert time.monotonic() - started < 10, server.log_text()  # not the 60 s drain
        assert "again: stopping now" in server.log_text()
    finally:
        await server.kill()


async def test_readyz_is_ready_on_the_embedded_default(tmp_path: Path) -> None:
    env = {"YSYNC_EMBEDDED_DATA_DIR": str(tmp_path / "data"), "REDIS": ""}
    async with running_server(env) as server:
        assert await get(server, "/readyz") == (200, "ready\n")
