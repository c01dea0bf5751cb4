"""The worker when things go wrong: failing, hanging or corrupt storage, killed workers, racing
workers.

In every case no update is lost, the documents converge, and no snapshot is deleted before a
newer one containing it is persisted. (The worker killed at each named step of a compaction,
as real processes with real clients: tests/faults/test_worker_faults.py.)
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pycrdt
import pytest
import redis.asyncio as aioredis

from workers.compactor import Worker
from ysync.config import StorageConfig
from ysync.errors import StorageError
from ysync.ops import doc_to_json
from ysync.storage.factory import open_storage
from ysync.storage.filesystem import FilesystemStorage, folder_name
from ysync.storage.memory import MemoryStorage
from ysync.streams import StreamId, room_stream_key
from ysync.updates import merge_v2, v2_to_v1

from storage_fixtures import (
    PERSISTENT_BACKENDS,
    append_updates,
    doc_json_of_v2,
    edit_doc,
    make_config,
    redis_now_ms,
    storage_config,
    storage_env,
    wait_past_ms,
    wait_until,
)
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


def counted(worker: Worker, name: str) -> float:
    """The value of the worker's counter ``name`` (without ``_total``)."""
    value = worker.metrics.registry.get_sample_value(f"{name}_total")
    assert value is not None, name
    return value


def contains(container_v2: bytes, content_v2: bytes) -> bool:
    """True if applying ``content`` to ``container`` changes nothing (inserts and deletes)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(v2_to_v1(container_v2))
    changes: list[bool] = []
    doc.observe(lambda _event: changes.append(True))
    doc.apply_update(v2_to_v1(content_v2))
    return not changes


def json_of_updates(updates: Sequence[bytes]) -> dict[str, Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc_to_json(doc)


class AuditedStorage(MemoryStorage):
    """Memory storage that checks, at every deletion, that what is deleted is contained in what
    remains, and can be told to fail or to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.fail_persist = False
        self.persists = 0
        self.deletions = 0

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        if self.fail_persist:
            raise StorageError("disk on fire")
        await super().persist_doc(room, docid, update_v2)
        self.persists += 1

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        snapshots = self._docs.get((room, docid), {})
        deleted = [v for r, v in snapshots.items() if r in references]
        remaining = [v for r, v in snapshots.items() if r not in references]
        if deleted:
            if not remaining:
                self.violations.append(f"{room}: deleted every snapshot")
            elif not contains(merge_v2(remaining), merge_v2(deleted)):
                self.violations.append(f"{room}: deleted content no snapshot holds")
        self.deletions += 1
        await super().delete_references(room, docid, references)


class GatedStorage(MemoryStorage):
    """A view of another storage whose persist waits for ``gate`` (a slow worker)."""

    def __init__(self, inner: MemoryStorage) -> None:
        super().__init__()
        self._docs = inner._docs
        self._inner = inner
        self.entered = anyio.Event()
        self.gate = anyio.Event()

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        self.entered.set()
        await self.gate.wait()
        await self._inner.persist_doc(room, docid, update_v2)

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        await self._inner.delete_references(room, docid, references)


async def test_failing_persist_loses_nothing_and_is_retried(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "failing")
    updates, expected = edit_doc(client_id=3)
    storage = AuditedStorage()
    await append_updates(client, prefix, key, updates)
    storage.fail_persist = True
    worker = Worker(client, storage, config, consumer="unlucky")
    assert await worker.process_due_tasks() == 1
    assert worker.failures == 1
    assert counted(worker, "ysync_worker_persist_failures") == 1
    assert counted(worker, "ysync_worker_task_failures") == 1
    assert counted(worker, "ysync_worker_tasks_completed") == 0
    assert await client.xlen(key) == len(updates)  # nothing trimmed
    assert await storage.retrieve_doc("failing", "index") is None
    queue = f"{prefix}:worker"
    [entry] = await client.xpending_range(queue, queue, "-", "+", 10)
    assert entry["consumer"] == b"unlucky"  # still pending: claimed again after the debounce

    storage.fail_persist = False
    assert await Worker(client, storage, config).process_due_tasks() == 1
    stored = await storage.retrieve_doc("failing", "index")
    assert stored is not None and doc_json_of_v2(stored.update_v2) == expected
    assert storage.violations == []


async def test_timed_out_persist_loses_nothing_and_is_retried(
    redis_url: str, prefix: str, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend that never answers (no timeout of its own): the worker gives up after
    ``storage.timeout``, trims nothing, and a later claim of the task completes it."""

    class Hanging(MemoryStorage):
        hang = True

        async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
            if self.hang:
                await anyio.sleep_forever()
            await super().persist_doc(room, docid, update_v2)

    config = make_config(redis_url=redis_url, prefix=prefix,
                         storage=StorageConfig(kind="memory", timeout=0.2))
    key = room_stream_key(prefix, "hanging")
    updates, expected = edit_doc(client_id=5)
    storage = Hanging()
    await append_updates(client, prefix, key, updates)
    worker = Worker(client, storage, config, consumer="patient")
    with caplog.at_level(logging.ERROR, logger="workers.compactor"), anyio.fail_after(10):
        assert await worker.process_due_tasks() == 1
    assert worker.failures == 1 and counted(worker, "ysync_worker_persist_failures") == 1
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "'hanging'" in message and "timed out after 0.2 s" in message
    assert await client.xlen(key) == len(updates)  # nothing trimmed
    queue = f"{prefix}:worker"
    [entry] = await client.xpending_range(queue, queue, "-", "+", 10)
    assert entry["consumer"] == b"patient"  # still queued, claimed again after the debounce

    storage.hang = False
    # this worker backs off (2 s at least): claimed again at once, the task is put off
    assert await worker.process_due_tasks() == 1
    assert counted(worker, "ysync_worker_retries_delayed") == 1
    assert counted(worker, "ysync_worker_tasks_completed") == 0
    assert await client.xlen(key) == len(updates)
    # another worker, which never failed on it, takes it after the debounce (0 here)
    other = Worker(client, storage, config, consumer="other")
    assert await other.process_due_tasks() == 1
    assert other.failures == 0 and counted(other, "ysync_worker_tasks_completed") == 1
    stored = await storage.retrieve_doc("hanging", "index")
    assert stored is not None and doc_json_of_v2(stored.update_v2) == expected


async def test_a_failing_stream_is_retried_with_a_growing_delay(
    redis_url: str, prefix: str, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failure of the same stream doubles this worker's wait before it retries, up to
    ``worker.retry_max``; the first success clears it."""
    import workers.compactor as compactor

    monkeypatch.setattr(compactor, "MIN_BACKOFF", 0.05)

    class Failing(MemoryStorage):
        failing = True

        async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
            if self.failing:
                raise StorageError("refused")
            await super().persist_doc(room, docid, update_v2)

    config = make_config(redis_url=redis_url, prefix=prefix,
                         storage=StorageConfig(kind="memory"), retry_max=0.3)
    key = room_stream_key(prefix, "flaky")
    updates, expected = edit_doc(client_id=9)
    await append_updates(client, prefix, key, updates)
    storage = Failing()
    worker = Worker(client, storage, config, consumer="backing-off")
    delays = []
    for _ in range(4):
        with anyio.fail_after(10):
            while worker._backoff.get(key) is not None and \
                    time.monotonic() < worker._backoff[key].retry_at:
                assert await worker.process_due_tasks() == 1  # claimed, put off
                await anyio.sleep(0.01)
            before = worker.failures
            assert await worker.process_due_tasks() == 1
            assert worker.failures == before + 1
            delays.append(worker._backoff[key].delay)
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.3]), delays
    assert counted(worker, "ysync_worker_retries_delayed") > 0
    assert await client.xlen(key) == len(updates)  # nothing trimmed meanwhile
    storage.failing = False
    await anyio.sleep(0.31)
    assert await worker.process_due_tasks() == 1
    assert key not in worker._backoff
    stored = await storage.retrieve_doc("flaky", "index")
    assert stored is not None and doc_json_of_v2(stored.update_v2) == expected


@pytest.mark.parametrize("snapshots", [1, 2])
async def test_corrupt_snapshot_is_never_merged(
    snapshots: int, tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture
) -> None:
    """A stored snapshot that does not decode (here: cut in half, as a partial copy would
    leave it), alone or beside a good one: the worker logs an error naming the room, merges
    nothing, deletes nothing, trims nothing, and retries; once it is repaired, the document is
    complete."""
    storage = FilesystemStorage(tmp_path / "storage")
    config = make_config(redis_url=redis_url, prefix=prefix,
                         storage=StorageConfig(kind="filesystem", path=str(storage.root)))
    room = "corrupt é"
    key = room_stream_key(prefix, room)
    updates, expected = edit_doc(client_id=6, rounds=6)
    worker = Worker(client, storage, config, consumer="careful")
    await append_updates(client, prefix, key, updates[:3])
    assert await worker.process_due_tasks() == 1
    folder = storage.root / folder_name(room) / "index"
    if snapshots == 2:  # a duplicate, as two racing workers leave
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None
        await storage.persist_doc(room, "index", stored.update_v2)
    files = sorted(folder.iterdir())
    assert len(files) == snapshots
    good = files[0].read_bytes()
    files[0].write_bytes(good[:len(good) // 2])
    await append_updates(client, prefix, key, updates[3:])
    length = await client.xlen(key)
    before = {path.name: path.read_bytes() for path in files}

    with caplog.at_level(logging.ERROR, logger="workers.compactor"):
        for attempt in (1, 2):  # retried, failing the same way each time
            worker._backoff.clear()  # as if its backoff (tested above) had passed
            assert await worker.process_due_tasks() == 1
            assert worker.failures == attempt
    assert counted(worker, "ysync_worker_unreadable_snapshots") == 2
    assert counted(worker, "ysync_worker_persist_failures") == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 2 and all("'corrupt é'" in m and "does not decode" in m
                                      for m in messages)
    assert await client.xlen(key) == length  # nothing trimmed
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before

    files[0].write_bytes(good)  # repaired (restored from a backup)
    worker._backoff.clear()
    assert await worker.process_due_tasks() == 1
    assert worker.failures == 2
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None and len(stored.references) == 1
    assert doc_json_of_v2(stored.update_v2) == expected


async def test_failing_reference_deletion_still_trims(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "r")
    updates, expected = edit_doc(client_id=4, rounds=4)

    class NoDeletes(MemoryStorage):
        async def delete_references(self, room: str, docid: str,
                                    references: Sequence[str]) -> None:
            raise StorageError("permission denied")

    storage = NoDeletes()
    worker = Worker(client, storage, config)
    await append_updates(client, prefix, key, updates[:2])
    assert await worker.process_due_tasks() == 1
    await append_updates(client, prefix, key, updates[2:])
    last = (await client.xrange(key))[-1][0]
    await wait_past_ms(client, StreamId.parse(last).ms)
    assert await worker.process_due_tasks() == 1
    assert worker.failures == 0
    stored = await storage.retrieve_doc("r", "index")
    assert stored is not None and len(stored.references) == 2  # the old one stays: harmless
    assert doc_json_of_v2(stored.update_v2) == expected


_KILLED_WORKER = """
import os, signal, sys
import anyio, redis.asyncio as aioredis
from workers.compactor import Worker
from ysync.config import load_config
from ysync.storage.factory import open_storage

async def main():
    config = load_config(sys.argv[1])
    client = aioredis.Redis.from_url(config.redis.url)
    async with open_storage(config) as storage:
        persist = storage.persist_doc
        async def persist_then_die(room, docid, update):
            await persist(room, docid, update)
            os.kill(os.getpid(), signal.SIGKILL)  # between persist and trim
        storage.persist_doc = persist_then_die
        await Worker(client, storage, config, consumer="doomed").process_due_tasks()

anyio.run(main)
"""


@pytest.mark.parametrize("kind", PERSISTENT_BACKENDS)
async def test_worker_killed_between_persist_and_trim(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, prefix: str,
    client: aioredis.Redis
) -> None:
    storage_cfg = storage_config(kind, request, tmp_path)
    config = make_config(redis_url=redis_url, prefix=prefix, storage=storage_cfg)
    room = f"killed {uuid.uuid4().hex[:6]}"
    key = room_stream_key(prefix, room)
    updates, expected = edit_doc(client_id=9, rounds=6)
    await append_updates(client, prefix, key, updates[:4])
    config_file = tmp_path / "config.toml"
    config_file.write_text("[redis]\ntask_debounce = 0\nmin_message_lifetime = 0\n")
    env = {**os.environ, "REDIS": redis_url, "REDIS_PREFIX": prefix, **storage_env(storage_cfg),
           "PYTHONPATH": str(REPO)}
    result = await anyio.run_process([sys.executable, "-c", _KILLED_WORKER, str(config_file)],
                                     env=env, cwd=tmp_path, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert await client.xlen(key) == 4  # not trimmed
    async with open_storage(config) as storage:
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None  # persisted before the kill
        # meanwhile the clients go on writing
        await append_updates(client, prefix, key, updates[4:])
        # the task is still pending, owned by the dead worker; another worker takes it over
        worker = Worker(client, storage, config, consumer="heir")
        assert await worker.process_due_tasks() == 1
        assert worker.failures == 0
        final = await storage.retrieve_doc(room, "index")
        assert final is not None and doc_json_of_v2(final.update_v2) == expected
        assert set(final.references).isdisjoint(stored.references)


async def test_two_workers_racing_on_one_task(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "race")
    updates, expected = edit_doc(client_id=12, rounds=6)
    shared = AuditedStorage()
    slow_view = GatedStorage(shared)
    slow = Worker(client, slow_view, config, consumer="slow")
    fast = Worker(client, shared, config, consumer="fast")
    await append_updates(client, prefix, key, updates[:3])
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow.process_due_tasks)
        with anyio.fail_after(10):
            await slow_view.entered.wait()
        # the slow worker holds the task, mid-persist; more updates arrive; with the debounce
        # passed, the fast worker claims the same task
        await append_updates(client, prefix, key, updates[3:])
        assert await fast.process_due_tasks() == 1
        slow_view.gate.set()
    assert slow.failures == fast.failures == 0
    assert shared.persists == 2  # both persisted: the slow one's snapshot is the older
    stored = await shared.retrieve_doc("race", "index")
    assert stored is not None and len(stored.references) == 2
    assert doc_json_of_v2(stored.update_v2) == expected
    # one more edit: the next compaction merges both snapshots and deletes them (audited)
    more, _ = edit_doc(client_id=13, rounds=1, tag="late")
    await append_updates(client, prefix, key, more)
    expected = json_of_updates([*updates, *more])
    # rounds until everything is compacted, the stream deleted and both tasks gone
    for _ in range(10):
        await wait_past_ms(client, await redis_now_ms(client))
        await fast.process_due_tasks()
        if not await client.exists(key) and not await client.xlen(f"{prefix}:worker"):
            break
    assert not await client.exists(key)
    assert await client.xlen(f"{prefix}:worker") == 0  # the duplicate task went too
    stored = await shared.retrieve_doc("race", "index")
    assert stored is not None and len(stored.references) == 1
    assert doc_json_of_v2(stored.update_v2) == expected
    assert shared.deletions > 0 and shared.violations == []


async def test_many_workers_and_writers_converge(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    """Three continuously running workers, debounce 0, while three clients write to two rooms."""
    config = make_config(redis_url=redis_url, prefix=prefix)
    shared = AuditedStorage()
    workers = [Worker(client, shared, config, consumer=f"w{i}") for i in range(3)]
    rooms = ["alpha", "beta"]
    expected: dict[str, dict[int, list[bytes]]] = {room: {} for room in rooms}
    for room in rooms:
        for client_id in (1, 2, 3):
            expected[room][client_id] = edit_doc(client_id=client_id, rounds=8,
                                                 tag=f"{room}{client_id}")[0]

    async def writer(room: str, client_id: int) -> None:
        for update in expected[room][client_id]:
            await append_updates(client, prefix, room_stream_key(prefix, room), [update])
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(worker.run)
        async with anyio.create_task_group() as writers:
            for room in rooms:
                for client_id in (1, 2, 3):
                    writers.start_soon(writer, room, client_id)

        async def drained() -> bool:
            return all([not await client.exists(room_stream_key(prefix, room))
                        for room in rooms])

        await wait_until(drained, 20, "every stream compacted and deleted")
        for worker in workers:
            worker.stop()
    for room in rooms:
        stored = await shared.retrieve_doc(room, "index")
        assert stored is not None
        assert doc_json_of_v2(stored.update_v2) == json_of_updates(
            [u for updates in expected[room].values() for u in updates])
    assert shared.violations == []
    assert sum(w.failures for w in workers) == 0
    assert sum(w.completed for w in workers) > 0
