"""Google Cloud Storage going away in the middle of a continuous worker's run: real processes
(a ysync server, ``ysync-worker``), real y-websocket clients, and a real ``gcp-storage-emulator``
of the test's own that is either killed and started again on its port, or frozen (SIGSTOP: its
port still accepts connections, nothing answers). The clients go on writing into Redis, the
worker fails its compactions, reports them and trims nothing; once storage is back, the same
worker persists everything.

The emulator keeps its objects on disk (``--data-dir``), so that the one started again holds
what the killed one had acknowledged, as GCS does; the in-memory emulator of the other tests
would come back empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from google.api_core.exceptions import NotFound

from ysync.config import StorageConfig
from ysync.streams import room_stream_key

from conftest import seconds
from harness import NodeClients, running_server, wait_until
from storage_fixtures import GcsEmulator, doc_json_of_v2, free_port, raw_snapshots, storage_env
from test_worker_faults import Writers, first_id, last_id
from worker_process import TIMING, WorkerProcess, run_worker_once

pytestmark = [pytest.mark.anyio, pytest.mark.node]

#: seconds for one storage call (``storage.timeout``): a frozen emulator costs this per attempt
STORAGE_TIMEOUT = 1.5
#: the worker's log line of a failed task (workers/compactor.py)
FAILED = "this worker retries it in"


class EmulatorProcess:
    """A ``gcp-storage-emulator`` keeping its buckets and objects in ``data_dir``, on a port of
    its own that it keeps when it is started again after :meth:`kill`."""

    def __init__(self, data_dir: Path) -> None:
        executable = shutil.which("gcp-storage-emulator") or str(
            Path(sys.executable).parent / "gcp-storage-emulator")
        if not Path(executable).exists():
            pytest.fail("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
        self._port = free_port()
        self._command = [executable, "--data-dir", str(data_dir), "start",
                         "--host", "127.0.0.1", "--port", str(self._port), "-q"]
        self.host = f"http://127.0.0.1:{self._port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self._command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        async def listening() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                pytest.fail(f"gcp-storage-emulator exited with {self.proc.returncode} "
                            f"(port {self._port} taken?)")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await wait_until(listening, 20, f"gcp-storage-emulator to listen on {self._port}")

    async def kill(self) -> None:
        """SIGKILL, as a crash would: its port refuses connections until :meth:`start`."""
        assert self.proc is not None
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), seconds(10))

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (by the kernel), nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def aclose(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # a stopped process dies of SIGKILL as well
            await self.proc.wait()


@pytest.mark.parametrize("outage", ["killed", "frozen"])
async def test_gcs_unavailable_during_a_worker_run(
    outage: str, tmp_path: Path, redis_url: str, prefix: str, node_dir: Path,
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GCS goes away while a continuous worker runs (``killed``: the emulator dies and its port
    refuses; ``frozen``: it stops answering): writes go on into Redis, every compaction fails,
    is logged with the stream and trims nothing, a ``--once`` run exits 1, a client joining
    meanwhile is refused with 1011; once GCS is back, the same worker persists every item."""
    emulator = EmulatorProcess(tmp_path / "gcs")
    await emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)  # read by storage_env, GcsEmulator
    gcs = GcsEmulator(emulator.host)
    storage = StorageConfig(kind="gcs", gcs_bucket=gcs.new_bucket(),
                            gcs_prefix=f"p-{uuid.uuid4().hex[:8]}")
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
           "YSYNC_STORAGE_TIMEOUT": str(seconds(STORAGE_TIMEOUT))}
    room = f"gcs-{outage}-{uuid.uuid4().hex[:8]}"
    key = room_stream_key(prefix, room)
    worker = WorkerProcess(env, tmp_path)

    def snapshots() -> list[bytes] | None:
        """The room's stored snapshots; None if one vanished between the listing and its
        download (the worker deleting the snapshots it merged)."""
        try:
            return raw_snapshots(storage, room, "index", gcs)
        except NotFound:
            return None

    try:
        async with NodeClients(node_dir) as clients, running_server(env) as server:
            writers = Writers(clients, server.url, room)
            await writers.open()
            await writers.write("a")
            await worker.start()

            async def persisted() -> bool:
                return worker.count("compacted ") > 0 and len(snapshots() or ()) == 1

            await wait_until(persisted, 20, "the worker to persist the first items")
            [first_snapshot] = snapshots() or ()

            failed = worker.count(FAILED)
            if outage == "killed":
                await emulator.kill()
            else:
                emulator.freeze()
            await writers.write("b")  # Redis carries on
            start = await first_id(client, key)
            assert start is not None

            async def failing(more: int) -> bool:
                return worker.count(FAILED) >= failed + more

            await wait_until(lambda: failing(1), 20, "the worker to fail a compaction")
            await writers.write("c")  # and on, while the worker keeps failing
            length = await client.xlen(key)
            await wait_until(lambda: failing(3), 20, "the worker to fail two more compactions")
            assert await first_id(client, key) == start  # nothing trimmed
            assert await client.xlen(key) >= length  # (awareness renewals may add entries)
            failures = [line for line in worker.lines if FAILED in line][failed:]
            assert all(key in line and "gcs storage: " in line for line in failures), failures
            assert worker.count("compacted ") == 1

            # a cron-style run meanwhile reports the outage with its exit status
            code, log = await run_worker_once(env, tmp_path)
            assert code == 1, log
            assert "gcs storage: checking bucket" in log, log

            # a client joining meanwhile is refused (1011), and y-websocket keeps retrying
            await clients.open("joiner", server.url, room)

            async def refused() -> bool:
                return 1011 in clients.closes("joiner")

            await wait_until(refused, 20, "the joining client to be refused with 1011")
            assert await first_id(client, key) == start

            before = await last_id(client, key)
            if outage == "killed":
                await emulator.start()  # on its port, from its data directory
            else:
                emulator.thaw()

            async def complete() -> bool:
                after = await first_id(client, key)
                stored = snapshots()
                return (after is None or after.ms >= before.ms) and \
                    stored is not None and len(stored) == 1 and stored != [first_snapshot]

            await wait_until(complete, 20, "the worker to persist and trim after the outage")
            [stored] = snapshots() or ()
            assert doc_json_of_v2(stored) == writers.expected_roots()
            await writers.fresh_client_sees_everything("late")

            async def joined() -> bool:
                return await clients.get("joiner") == writers.expected()

            await wait_until(joined, 20, "the refused client to join once GCS is back")
        assert await worker.stop() == 0, "\n".join(worker.lines)
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            await emulator.aclose()
