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

from conftest import seconds
from harness import wait_until
from outage_scenario import StorageOutage, run_outage_scenario
from storage_fixtures import GcsEmulator, free_port, raw_snapshots, storage_env
from worker_process import TIMING

pytestmark = [pytest.mark.anyio, pytest.mark.node]

#: seconds for one storage call (``storage.timeout``): a frozen emulator costs this per attempt
STORAGE_TIMEOUT = 1.5


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

    def snapshots(room: str) -> list[bytes] | None:
        try:
            return raw_snapshots(storage, room, "index", gcs)
        except NotFound:  # deleted by the worker between the listing and its download
            return None

    async def take_down() -> None:
        if outage == "killed":
            await emulator.kill()
        else:
            emulator.freeze()

    async def bring_back() -> None:
        if outage == "killed":
            await emulator.start()  # on its port, from its data directory
        else:
            emulator.thaw()

    scenario = StorageOutage(
        name="GCS",
        env={"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
             "YSYNC_STORAGE_TIMEOUT": str(seconds(STORAGE_TIMEOUT))},
        take_down=take_down, bring_back=bring_back, snapshots=snapshots,
        failure_labels=("gcs storage: ",), failures=3)
    try:
        await run_outage_scenario(scenario, outage, tmp_path, prefix, node_dir, client)
    finally:
        with contextlib.suppress(ProcessLookupError):
            await emulator.aclose()
