"""S3 going away in the middle of a continuous worker's run: real processes (a ysync server,
``ysync-worker``), real y-websocket clients, and a real S3 API (``moto_server``) behind a TCP
proxy of the test's own that either closes its port and drops every connection (``refusing``,
as a crashed or restarting S3 endpoint) or keeps accepting and answers nothing (``silent``, as
a hung one). The clients go on writing into Redis, the worker fails its compactions, reports
them and trims nothing; once S3 is back, the same worker persists everything.

The S3 server behind the proxy keeps running, so what it acknowledged before the outage is
there after it, as with S3. (The same scenario for GCS: test_storage_outage.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ysync.streams import encode_uri_component, room_stream_key

from conftest import seconds
from harness import NodeClients, running_server, wait_until
from storage_fixtures import MotoS3, doc_json_of_v2, free_port, storage_env
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from test_worker_faults import Writers, first_id, last_id
from worker_process import TIMING, WorkerProcess, run_worker_once

pytestmark = [pytest.mark.anyio, pytest.mark.node]

#: seconds for one storage call (``storage.timeout``): a silent S3 costs this per attempt
STORAGE_TIMEOUT = 1.0
#: the worker's log line of a failed task (workers/compactor.py)
FAILED = "this worker retries it in"


class S3Proxy:
    """A TCP proxy on a port of its own in front of ``127.0.0.1:<target>``: forwarding
    (:meth:`restore`), refusing connections (:meth:`refuse`) or accepting them and answering
    nothing (:meth:`silence`)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.forwarding = True
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.forwarding = True
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self.forwarding:
                await self._pump(reader, None)  # held open, read and never answered
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
            self._open.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except OSError:
            pass  # a connection aborted by refuse() or restore(): the client sees it reset
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    end.close()

    async def _pump(self, source: asyncio.StreamReader,
                    sink: asyncio.StreamWriter | None) -> None:
        while data := await source.read(65536):
            if sink is not None and self.forwarding:
                sink.write(data)
                await sink.drain()
        if sink is not None and sink.can_write_eof():
            sink.write_eof()

    def _abort_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    async def refuse(self) -> None:
        """Close the port (new connections are refused) and reset every open connection."""
        assert self._server is not None
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()
        self._server = None

    def silence(self) -> None:
        """Keep accepting; forward nothing either way from now on."""
        self.forwarding = False

    async def restore(self) -> None:
        """Forward again (on the same port); connections held while silent are reset."""
        self._abort_all()
        if self._server is None:
            await self.start()
        self.forwarding = True

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        if self._server is not None:
            await self._server.wait_closed()


@pytest.mark.parametrize("outage", ["refusing", "silent"])
async def test_s3_unavailable_during_a_worker_run(
    outage: str, tmp_path: Path, redis_url: str, prefix: str, node_dir: Path,
    client: aioredis.Redis, moto_s3: MotoS3,
) -> None:
    """S3 goes away while a continuous worker runs (``refusing``: its port refuses and open
    connections are reset; ``silent``: it stops answering): writes go on into Redis, every
    compaction fails, is logged with the stream and trims nothing, a ``--once`` run exits 1, a
    client joining meanwhile is refused with 1011; once S3 is back, the same worker persists
    every item."""
    proxy = S3Proxy(moto_s3.port)
    await proxy.start()
    bucket = moto_s3.new_bucket()
    storage = moto_s3.config(bucket, port=proxy.port)
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
           "YSYNC_STORAGE_TIMEOUT": str(seconds(STORAGE_TIMEOUT)),
           # retries 1 s apart (the backoff doubles from 2 s otherwise): the test stays short
           "YSYNC_WORKER_RETRY_MAX": "1"}
    room = f"s3-{outage}-{uuid.uuid4().hex[:8]}"
    key = room_stream_key(prefix, room)
    worker = WorkerProcess(env, tmp_path)

    def snapshots() -> list[bytes]:
        """The room's stored snapshots, read from S3 itself (not through the proxy)."""
        objects = moto_s3.objects(bucket, f"{encode_uri_component(room)}/index/")
        return [body for _name, body in sorted(objects.items())]

    try:
        async with NodeClients(node_dir) as clients, running_server(env) as server:
            writers = Writers(clients, server.url, room)
            await writers.open()
            await writers.write("a")
            await worker.start()

            async def persisted() -> bool:
                return worker.count("compacted ") > 0 and len(snapshots()) == 1

            await wait_until(persisted, 20, "the worker to persist the first items")
            [first_snapshot] = snapshots()

            failed = worker.count(FAILED)
            if outage == "refusing":
                await proxy.refuse()
            else:
                proxy.silence()
            await writers.write("b")  # Redis carries on
            start = await first_id(client, key)
            assert start is not None

            async def failing(more: int) -> bool:
                return worker.count(FAILED) >= failed + more

            await wait_until(lambda: failing(1), 20, "the worker to fail a compaction")
            await writers.write("c")  # and on, while the worker keeps failing
            length = await client.xlen(key)
            await wait_until(lambda: failing(2), 20, "the worker to fail once more")
            assert await first_id(client, key) == start  # nothing trimmed
            assert await client.xlen(key) >= length  # (awareness renewals may add entries)
            failures = [line for line in worker.lines if FAILED in line][failed:]
            assert all(key in line and "s3 storage: " in line and f"s3://{bucket}/" in line
                       for line in failures), failures
            assert all(moto_s3.secret_key not in line for line in worker.lines)
            assert worker.count("compacted ") == 1
            assert snapshots() == [first_snapshot]

            # a cron-style run meanwhile reports the outage with its exit status
            code, log = await run_worker_once(env, tmp_path)
            assert code == 1, log
            assert "s3 storage: checking bucket" in log, log

            # a client joining meanwhile is refused (1011), and y-websocket keeps retrying
            await clients.open("joiner", server.url, room)

            async def refused() -> bool:
                return 1011 in clients.closes("joiner")

            await wait_until(refused, 20, "the joining client to be refused with 1011")
            assert await first_id(client, key) == start

            before = await last_id(client, key)
            await proxy.restore()

            async def complete() -> bool:
                after = await first_id(client, key)
                stored = snapshots()
                return (after is None or after.ms >= before.ms) and \
                    len(stored) == 1 and stored != [first_snapshot]

            await wait_until(complete, 20, "the worker to persist and trim after the outage")
            [stored] = snapshots()
            assert doc_json_of_v2(stored) == writers.expected_roots()
            await writers.fresh_client_sees_everything("late")

            async def joined() -> bool:
                return await clients.get("joiner") == writers.expected()

            await wait_until(joined, 20, "the refused client to join once S3 is back")
        assert await worker.stop() == 0, "\n".join(worker.lines)
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()
        with contextlib.suppress(OSError):
            await proxy.aclose()
