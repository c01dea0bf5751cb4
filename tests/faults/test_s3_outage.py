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
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ysync.streams import encode_uri_component

from conftest import seconds
from outage_scenario import StorageOutage, run_outage_scenario
from storage_fixtures import MotoS3, free_port, storage_env
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from worker_process import TIMING

pytestmark = [pytest.mark.anyio, pytest.mark.node]

#: seconds for one storage call (``storage.timeout``): a silent S3 costs this per attempt
STORAGE_TIMEOUT = 1.0


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

    def snapshots(room: str) -> list[bytes]:
        """The room's stored snapshots, read from S3 itself (not through the proxy)."""
        objects = moto_s3.objects(bucket, f"{encode_uri_component(room)}/index/")
        return [body for _name, body in sorted(objects.items())]

    async def take_down() -> None:
        if outage == "refusing":
            await proxy.refuse()
        else:
            proxy.silence()

    def during_outage(room: str, lines: list[str], first_snapshot: bytes) -> None:
        assert all(moto_s3.secret_key not in line for line in lines)
        assert snapshots(room) == [first_snapshot]

    scenario = StorageOutage(
        name="S3",
        env={"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
             "YSYNC_STORAGE_TIMEOUT": str(seconds(STORAGE_TIMEOUT)),
             # retries 1 s apart (the backoff doubles from 2 s otherwise): the test stays short
             "YSYNC_WORKER_RETRY_MAX": "1"},
        take_down=take_down, bring_back=proxy.restore, snapshots=snapshots,
        failure_labels=("s3 storage: ", f"s3://{bucket}/"), during_outage=during_outage)
    try:
        await run_outage_scenario(scenario, outage, tmp_path, prefix, node_dir, client)
    finally:
        with contextlib.suppress(OSError):
            await proxy.aclose()
