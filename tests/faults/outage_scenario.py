"""The scenario shared by the storage outage tests (test_storage_outage.py for GCS,
test_s3_outage.py for S3): a continuous worker persists a room, its storage goes away, the
clients go on writing into Redis, the worker fails its compactions, reports them and trims
nothing, a ``--once`` run exits 1, a client joining meanwhile is refused with 1011; once storage
is back, the same worker persists everything in one new snapshot.

Each test brings what is particular to its storage as a :class:`StorageOutage`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from ysync.streams import room_stream_key

from harness import NodeClients, running_server, wait_until
from storage_fixtures import doc_json_of_v2
from test_worker_faults import Writers, first_id, last_id
from worker_process import WorkerProcess, run_worker_once

#: the worker's log line of a failed task (workers/compactor.py)
FAILED = "this worker retries it in"


@dataclass(frozen=True)
class StorageOutage:
    """What one storage brings to :func:`run_outage_scenario`."""

    #: the storage's name in messages ("GCS", "S3"); its lower case starts the room's name
    name: str
    #: the environment of the server, the worker and the ``--once`` run
    env: dict[str, str]
    take_down: Callable[[], Awaitable[None]]
    bring_back: Callable[[], Awaitable[None]]
    #: the stored snapshots of a room, read from the storage itself (not through the worker);
    #: None if one vanished between the listing and its download
    snapshots: Callable[[str], list[bytes] | None]
    #: texts every failure line of the worker contains besides the stream key
    failure_labels: tuple[str, ...]
    #: how many compactions fail (counting the first) before the checks of the outage
    failures: int = 2
    #: further checks while storage is away, given the room, the worker's log lines and the
    #: room's first snapshot
    during_outage: Callable[[str, list[str], bytes], None] | None = None


async def run_outage_scenario(
    outage: StorageOutage, variant: str, tmp_path: Path, prefix: str, node_dir: Path,
    client: aioredis.Redis,
) -> None:
    """Run the scenario for ``outage`` (``variant`` names the way storage goes away)."""
    env = outage.env
    kind = outage.name.lower()
    room = f"{kind}-{variant}-{uuid.uuid4().hex[:8]}"
    key = room_stream_key(prefix, room)
    worker = WorkerProcess(env, tmp_path)

    def snapshots() -> list[bytes] | None:
        return outage.snapshots(room)

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
            await outage.take_down()
            await writers.write("b")  # Redis carries on
            start = await first_id(client, key)
            assert start is not None

            async def failing(more: int) -> bool:
                return worker.count(FAILED) >= failed + more

            await wait_until(lambda: failing(1), 20, "the worker to fail a compaction")
            await writers.write("c")  # and on, while the worker keeps failing
            length = await client.xlen(key)
            await wait_until(lambda: failing(outage.failures), 20,
                             f"the worker to fail {outage.failures} compactions in all")
            assert await first_id(client, key) == start  # nothing trimmed
            assert await client.xlen(key) >= length  # (awareness renewals may add entries)
            failures = [line for line in worker.lines if FAILED in line][failed:]
            assert all(key in line and all(label in line for label in outage.failure_labels)
                       for line in failures), failures
            assert worker.count("compacted ") == 1
            if outage.during_outage is not None:
                outage.during_outage(room, worker.lines, first_snapshot)

            # a cron-style run meanwhile reports the outage with its exit status
            code, log = await run_worker_once(env, tmp_path)
            assert code == 1, log
            assert f"{kind} storage: checking bucket" in log, log

            # a client joining meanwhile is refused (1011), and y-websocket keeps retrying
            await clients.open("joiner", server.url, room)

            async def refused() -> bool:
                return 1011 in clients.closes("joiner")

            await wait_until(refused, 20, "the joining client to be refused with 1011")
            assert await first_id(client, key) == start

            before = await last_id(client, key)
            await outage.bring_back()

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

            await wait_until(joined, 20, f"the refused client to join once {outage.name} is back")
        assert await worker.stop() == 0, "\n".join(worker.lines)
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()
