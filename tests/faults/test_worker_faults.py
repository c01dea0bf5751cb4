"""The compaction worker killed at each step of a compaction, and storage refusing connections
in the middle of a worker's run: real processes (a ysync server, ``ysync-worker``), real
y-websocket clients, real storage. Nothing the clients wrote is lost, the stream ends
compacted, and the snapshots of a document do not pile up.

The worker is stopped at a named step by ``YSYNC_TEST_FAULT=<point>`` (workers/compactor.py
``FAULT_POINTS``): it kills itself with SIGKILL there, as a crash or an OOM kill would, so
nothing is left to chance or to sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from workers.compactor import FAULT_ENV, FAULT_POINTS
from ysync.config import StorageConfig
from ysync.storage.filesystem import folder_name
from ysync.streams import StreamId, room_stream_key

from harness import NodeClients, running_server, wait_until
from storage_fixtures import doc_json_of_v2, raw_snapshots, storage_env
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture
from worker_process import DEBOUNCE_MS, TIMING, WorkerProcess, run_worker_once

pytestmark = [pytest.mark.anyio, pytest.mark.node]

async def wait_tasks_due(client: aioredis.Redis, prefix: str) -> None:
    """Until every task of the prefix (there is one: one room) can be claimed: idle for the
    debounce, whoever holds it (``pending``, or a worker that was killed holding it)."""
    queue = f"{prefix}:worker"

    async def due() -> bool:
        pending = await client.xpending_range(queue, queue, "-", "+", 10)
        return bool(pending) and all(p["time_since_delivered"] >= DEBOUNCE_MS for p in pending)

    await wait_until(due, 10, "the room's task to be due")


async def first_id(client: aioredis.Redis, key: str) -> StreamId | None:
    entries = await client.xrange(key, count=1)
    return StreamId.parse(entries[0][0]) if entries else None


async def last_id(client: aioredis.Redis, key: str) -> StreamId:
    [(entry_id, _)] = await client.xrevrange(key, count=1)
    return StreamId.parse(entry_id)


class Writers:
    """Two y-websocket clients of one room on one server; each writes its own items, and a
    round of writes is done when both clients hold every item (so it is in the stream)."""

    def __init__(self, clients: NodeClients, url: str, room: str) -> None:
        self.clients = clients
        self.url = url
        self.room = room
        self.arr: list[str] = []
        self.map: dict[str, str] = {}

    async def open(self) -> None:
        for name in ("alice", "bob"):
            await self.clients.open(name, self.url, self.room)
            await self.clients.synced(name)

    def expected(self) -> dict[str, Any]:
        """The document as the clients show it."""
        return {"text": "", "map": dict(self.map), "arr": list(self.arr)}

    def expected_roots(self) -> dict[str, Any]:
        """The document as a snapshot holds it (roots that were written)."""
        return {"map": dict(self.map), "arr": list(self.arr)}

    async def write(self, tag: str, count: int = 4) -> None:
        for i in range(count):
            item = f"{tag}{i}"
            await self.clients.call("arrayPush", name="alice", values=[item])
            await self.clients.call("mapSet", name="bob", key=item, value=f"bob {item}")
            self.arr.append(item)
            self.map[item] = f"bob {item}"
        expected = self.expected()

        async def both_have_it() -> bool:
            return all([await self.clients.get(n) == expected for n in ("alice", "bob")])

        await wait_until(both_have_it, 15, f"both clients to hold the items {tag}*")

    async def fresh_client_sees_everything(self, name: str) -> None:
        await self.clients.open(name, self.url, self.room)
        await self.clients.synced(name)
        assert await self.clients.get(name) == self.expected()


def snapshot_names(storage: StorageConfig, room: str) -> set[str]:
    folder = Path(storage.path) / folder_name(room) / "index"
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize("point", FAULT_POINTS)
async def test_worker_killed_at_a_step_of_compaction(
    point: str, tmp_path: Path, redis_url: str, prefix: str, node_dir: Path,
    client: aioredis.Redis,
) -> None:
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage)}
    room = f"fault-{point}"
    key = room_stream_key(prefix, room)
    queue = f"{prefix}:worker"
    async with NodeClients(node_dir) as clients, running_server(env) as server:
        writers = Writers(clients, server.url, room)
        await writers.open()
        await writers.write("a")
        await wait_tasks_due(client, prefix)
        assert (await run_worker_once(env, tmp_path))[0] == 0
        [old] = snapshot_names(storage, room)

        # more items, and a worker that dies at `point` of compacting them
        await writers.write("b")
        start = await first_id(client, key)
        await wait_tasks_due(client, prefix)
        code, log = await run_worker_once(env, tmp_path, fault=point)
        assert code == -9, log
        assert f"{FAULT_ENV}={point}: killing this worker process" in log
        names = snapshot_names(storage, room)
        trimmed = await first_id(client, key) != start
        [task] = await client.xpending_range(queue, queue, "-", "+", 10)
        if point == "before-persist":
            assert names == {old} and not trimmed
        elif point == "after-persist":
            assert len(names) == 2 and old in names and not trimmed
        elif point == "after-delete":
            assert len(names) == 1 and old not in names and not trimmed
        else:  # after-trim: trimmed and re-queued in one transaction
            assert len(names) == 1 and old not in names and trimmed
            assert task["consumer"] == b"pending"
        if point != "after-trim":
            assert task["consumer"] != b"pending"  # the dead worker's, until claimed again

        # a worker without the fault takes the task over after the debounce
        before = await last_id(client, key)
        await wait_tasks_due(client, prefix)
        code, log = await run_worker_once(env, tmp_path)
        assert code == 0, log
        assert len(snapshot_names(storage, room)) <= 2  # at most the duplicate of after-persist
        after = await first_id(client, key)
        assert after is None or after.ms >= before.ms  # compacted: trimmed to the newest entry

        # the next compaction with new content leaves one snapshot holding everything
        await writers.write("c")
        await wait_tasks_due(client, prefix)
        code, log = await run_worker_once(env, tmp_path)
        assert code == 0, log
        [stored] = raw_snapshots(storage, room, "index")
        assert doc_json_of_v2(stored) == writers.expected_roots()
        await writers.fresh_client_sees_everything("late")


class RefusingProxy:
    """A TCP proxy in front of PostgreSQL that can be made to refuse connections: while it is
    down its port is closed and the connections it carried are cut."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):  # cut (down()) or closed by either side
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def aclose(self) -> None:
        if self._server is not None and self._server.is_serving():
            await self.down()


def _rows(url: str, room: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM yredis_docs_v1 WHERE room = %s AND doc = %s",
                           (room, "index")).fetchone()
    assert row is not None
    return int(row[0])


async def test_postgres_refusing_connections_during_a_worker_run(
    postgres_url: str, tmp_path: Path, redis_url: str, prefix: str,  # noqa: F811 - fixture
    node_dir: Path, client: aioredis.Redis,
) -> None:
    """PostgreSQL goes away while a continuous worker runs (its port refuses, its connections
    are cut): clients go on writing through Redis, the worker fails its compactions and trims
    nothing; once PostgreSQL is back, the same worker completes the document."""
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    proxy = RefusingProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    await proxy.up()
    user = f"{info['user']}@" if info.get("user") else ""
    proxied = f"postgresql://{user}127.0.0.1:{proxy.port}/{info['dbname']}"
    storage = StorageConfig(kind="postgres", postgres=proxied)
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
           "YSYNC_STORAGE_TIMEOUT": "3"}
    room = f"outage-{uuid.uuid4().hex[:8]}"
    key = room_stream_key(prefix, room)
    worker = WorkerProcess(env, tmp_path)
    try:
        async with NodeClients(node_dir) as clients, running_server(env) as server:
            writers = Writers(clients, server.url, room)
            await writers.open()
            await writers.write("a")
            await worker.start()

            async def persisted() -> bool:
                return worker.count("compacted ") > 0 and _rows(postgres_url, room) == 1

            await wait_until(persisted, 20, "the worker to persist the first items")
            await proxy.down()
            await writers.write("b")  # Redis carries on
            start = await first_id(client, key)
            failed = worker.count("this worker retries it in")

            async def failing_again() -> bool:
                return worker.count("this worker retries it in") >= failed + 2

            await wait_until(failing_again, 20, "the worker to fail two compactions")
            assert await first_id(client, key) == start  # nothing trimmed
            assert _rows(postgres_url, room) == 1

            before = await last_id(client, key)
            await proxy.up()

            async def complete() -> bool:
                after = await first_id(client, key)
                return (after is None or after.ms >= before.ms) and \
                    _rows(postgres_url, room) == 1

            await wait_until(complete, 20, "the worker to persist and trim after the outage")
            [stored] = raw_snapshots(StorageConfig(kind="postgres", postgres=postgres_url),
                                     room, "index")
            assert doc_json_of_v2(stored) == writers.expected_roots()
            await writers.fresh_client_sees_everything("late")
        assert await worker.stop() == 0, "\n".join(worker.lines)
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()
        await proxy.aclose()
