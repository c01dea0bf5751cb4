"""The compaction worker on a real Redis, with every storage backend (docs/protocol.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from workers.compactor import Worker
from ysync.errors import BusError
from ysync.protocol import read_var_uint
from ysync.storage.factory import open_storage
from ysync.streams import (
    Layout,
    Scripts,
    StreamId,
    ensure_worker_group,
    room_stream_key,
    worker_stream_key,
)
from ysync.updates import merge_v2, v1_to_v2

from storage_fixtures import (
    BACKENDS,
    PERSISTENT_BACKENDS,
    append_updates,
    doc_json_of_v2,
    edit_doc,
    make_config,
    node_merge,
    raw_snapshots,
    storage_config,
    wait_past_ms,
)
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

ROOTS = {"map": "map", "text": "text", "array": "array"}


def decode_state_vector(sv: bytes) -> dict[int, int]:
    count, pos = read_var_uint(sv, 0)
    out = {}
    for _ in range(count):
        client, pos = read_var_uint(sv, pos)
        out[client], pos = read_var_uint(sv, pos)
    return out


async def queue_state(
    client: aioredis.Redis, prefix: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """(ids in the worker queue, [(pending id, owner)] of the tasks still in the queue).

    A deleted task stays in the group's pending list (y-redis deletes tasks with XDEL, not
    XACK) until an XAUTOCLAIM passes over it; those entries are left out.
    """
    queue = f"{prefix}:worker"
    ids = [str(StreamId.parse(i)) for i, _ in await client.xrange(queue)]
    pending = await client.xpending_range(queue, queue, "-", "+", 100)
    return ids, [(str(StreamId.parse(p["message_id"])), p["consumer"].decode())
                 for p in pending if str(StreamId.parse(p["message_id"])) in ids]


async def stream_ids(client: aioredis.Redis, key: str) -> list[StreamId]:
    return [StreamId.parse(i) for i, _ in await client.xrange(key)]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_compaction_cycle(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, prefix: str,
    client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix,
                         storage=storage_config(kind, request, tmp_path))
    room = f"room é {uuid.uuid4().hex[:6]}"
    key = room_stream_key(prefix, room)
    updates, expected = edit_doc(client_id=101, rounds=4)
    async with open_storage(config) as storage:
        await ensure_worker_group(client, worker_stream_key(prefix))
        await append_updates(client, prefix, key, updates[:1])
        first = (await stream_ids(client, key))[0]
        await wait_past_ms(client, first.ms)
        await append_updates(client, prefix, key, updates[1:])
        await Scripts(client, Layout(prefix)).append(key, bytes.fromhex(
            "011d010101197b2275736572223a7b226e616d65223a22616c696365227d7d"))
        last = (await stream_ids(client, key))[-1]
        [task], [(pending_id, owner)] = await queue_state(client, prefix)
        assert (pending_id, owner) == (task, "pending")
        # the task is made with the first message, in the same script
        assert 0 <= first.ms - StreamId.parse(task).ms <= 1

        worker = Worker(client, storage, config, consumer="w1")
        assert await worker.process_due_tasks() == 1
        # persisted: one v2 snapshot holding the whole document
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None and len(stored.references) == 1
        assert doc_json_of_v2(stored.update_v2) == expected
        # trimmed below the last entry's millisecond (MINID = lastId - 0)
        remaining = await stream_ids(client, key)
        assert first not in remaining and remaining[-1] == last
        assert all(i.ms >= last.ms for i in remaining)
        # re-queued: the old task is gone, a new one waits, owned by `pending`
        [requeued], [(pending_id, owner)] = await queue_state(client, prefix)
        assert requeued != task and (pending_id, owner) == (requeued, "pending")

        await wait_past_ms(client, max(last.ms, StreamId.parse(requeued).ms))
        assert await worker.process_due_tasks() == 1
        # nothing new: no new snapshot; the stream is now empty (MINID = the new task's ms)
        again = await storage.retrieve_doc(room, "index")
        assert again is not None and again.references == stored.references
        assert await client.xlen(key) == 0 and await client.exists(key) == 1
        [third], [(_, owner)] = await queue_state(client, prefix)
        assert owner == "pending"

        assert await worker.process_due_tasks() == 1
        # empty: the stream and its task are deleted together
        assert await client.exists(key) == 0
        assert await queue_state(client, prefix) == ([], [])
        assert await worker.process_due_tasks() == 0
        assert worker.failures == 0 and worker.completed == 3

        final = await storage.retrieve_doc(room, "index")
        assert final is not None and doc_json_of_v2(final.update_v2) == expected


async def test_min_message_lifetime_keeps_recent_messages(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix, min_message_lifetime=60_000)
    room = "lifetime"
    key = room_stream_key(prefix, room)
    updates, expected = edit_doc(client_id=5)
    async with open_storage(config) as storage:
        await append_updates(client, prefix, key, updates)
        worker = Worker(client, storage, config)
        assert await worker.process_due_tasks() == 1
        assert await client.xlen(key) == len(updates)  # younger than a minute: kept
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None and doc_json_of_v2(stored.update_v2) == expected
        assert await worker.process_due_tasks() == 1  # the re-queued task: nothing to do
        assert await client.xlen(key) == len(updates)
        again = await storage.retrieve_doc(room, "index")
        assert again is not None and again.references == stored.references


async def test_task_debounce_is_respected(redis_url: str, prefix: str,
                                          client: aioredis.Redis) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix, task_debounce=60_000)
    async with open_storage(config) as storage:
        await append_updates(client, prefix, room_stream_key(prefix, "r"), edit_doc(1)[0])
        worker = Worker(client, storage, config)
        assert await worker.process_due_tasks() == 0
        assert await worker.run(once=True) is None
        assert await storage.retrieve_doc("r", "index") is None
        _, [(_, owner)] = await queue_state(client, prefix)
        assert owner == "pending"


async def test_awareness_only_stream_persists_nothing(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "presence")
    scripts = Scripts(client, Layout(prefix))
    await ensure_worker_group(client, worker_stream_key(prefix))
    async with open_storage(config) as storage:
        for hex_message in ("0106010100027b7d", "0108010300046e756c6c"):
            await scripts.append(key, bytes.fromhex(hex_message))
        worker = Worker(client, storage, config)
        last = (await stream_ids(client, key))[-1]
        await wait_past_ms(client, last.ms)
        assert await worker.process_due_tasks() == 1
        assert await storage.retrieve_doc("presence", "index") is None
        assert await worker.process_due_tasks() == 1
        assert await worker.process_due_tasks() == 1
        assert await client.exists(key) == 0


async def test_observed_y_redis_messages(redis_url: str, prefix: str,
                                         client: aioredis.Redis) -> None:
    """The stream entries y-redis 0.1.6 writes (docs/protocol.md) compact to their document."""
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "observed")
    scripts = Scripts(client, Layout(prefix))
    await ensure_worker_group(client, worker_stream_key(prefix))
    async with open_storage(config) as storage:
        for hex_message in (
            "000217010101002801036d6170036b657901770576616c756500",
            "00021201010200040104746578740568656c6c6f00",
            "011d010101197b2275736572223a7b226e616d65223a22616c696365227d7d",
            "0002020000",
        ):
            await scripts.append(key, bytes.fromhex(hex_message))
        assert await Worker(client, storage, config).process_due_tasks() == 1
        stored = await storage.retrieve_doc("observed", "index")
        assert stored is not None
        assert doc_json_of_v2(stored.update_v2) == {"map": {"key": "value"}, "text": "hello"}


@pytest.mark.node
@pytest.mark.parametrize("kind", PERSISTENT_BACKENDS)
async def test_snapshots_are_read_by_real_yjs(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, prefix: str,
    client: aioredis.Redis, node_dir: Path
) -> None:
    """Updates made by real Yjs, compacted by the worker, stored, then merged by real Yjs."""
    made = await anyio.run_process(["node", "worker_make_updates.mjs"], cwd=node_dir,
                                   check=True)
    generated: dict[str, Any] = json.loads(made.stdout)
    updates = [bytes.fromhex(u) for u in generated["updates"]]
    expected = generated["expected"]
    storage_cfg = storage_config(kind, request, tmp_path)
    config = make_config(redis_url=redis_url, prefix=prefix, storage=storage_cfg)
    room = f"yjs room {uuid.uuid4().hex[:6]}"
    key = room_stream_key(prefix, room)
    emulator = request.getfixturevalue("gcs_emulator") if kind == "gcs" else None
    async with open_storage(config) as storage:
        worker = Worker(client, storage, config)
        half = len(updates) // 2
        # two compactions: the second merges the first snapshot with the rest of the stream
        await append_updates(client, prefix, key, updates[:half])
        assert await worker.process_due_tasks() == 1
        await append_updates(client, prefix, key, updates[half:])
        assert await worker.process_due_tasks() == 1
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None and len(stored.references) == 1
        assert doc_json_of_v2(stored.update_v2) == expected
    snapshots = raw_snapshots(storage_cfg, room, "index", emulator)
    assert len(snapshots) == 1
    merged = node_merge(node_dir, snapshots, ROOTS)
    assert merged["json"] == expected
    if kind == "postgres":
        # the sv column holds what Y.encodeStateVector gives for the stored doc
        import psycopg

        with psycopg.connect(storage_cfg.postgres) as conn:
            [(sv,)] = conn.execute("SELECT sv FROM yredis_docs_v1 WHERE room = %s",
                                   (room,)).fetchall()
        assert decode_state_vector(bytes(sv)) == decode_state_vector(
            bytes.fromhex(merged["stateVector"]))
    # a second snapshot made concurrently (two workers raced) merges the same in Yjs and pycrdt
    extra_updates, _ = edit_doc(client_id=77, tag="x")
    extra = merge_v2([v1_to_v2(u) for u in extra_updates])
    both = node_merge(node_dir, [*snapshots, extra], ROOTS)
    assert both["json"] == doc_json_of_v2(merge_v2([*snapshots, extra]))
    assert "x0;" in both["json"]["text"]


async def test_once_processes_every_due_task_once(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix, try_claim_count=1)
    rooms = [f"room{i}" for i in range(4)]
    async with open_storage(config) as storage:
        for i, room in enumerate(rooms):
            await append_updates(client, prefix, room_stream_key(prefix, room),
                                 edit_doc(client_id=200 + i)[0])
        worker = Worker(client, storage, config)
        with anyio.fail_after(10):  # debounce 0: re-queued tasks are due at once, yet it ends
            await worker.run(once=True)
        # (a task re-queued within the run's first millisecond may be seen once more)
        assert worker.completed >= len(rooms) and worker.failures == 0
        for room in rooms:
            assert await storage.retrieve_doc(room, "index") is not None
        ids, pending = await queue_state(client, prefix)
        assert len(ids) == len(rooms) and {owner for _, owner in pending} == {"pending"}


async def test_duplicate_tasks_of_a_stream_are_processed_once(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    key = room_stream_key(prefix, "dup")
    queue = f"{prefix}:worker"
    updates, expected = edit_doc(client_id=300)
    async with open_storage(config) as storage:
        await append_updates(client, prefix, key, updates)
        # a second task for the same stream, as a race between two workers leaves it
        await client.xadd(queue, {"compact": key})
        await client.xreadgroup(queue, "pending", {queue: ">"}, count=50)
        worker = Worker(client, storage, config)
        assert await worker.process_due_tasks() == 2
        stored = await storage.retrieve_doc("dup", "index")
        assert stored is not None and len(stored.references) == 1
        assert doc_json_of_v2(stored.update_v2) == expected
        ids, _ = await queue_state(client, prefix)
        assert len(ids) == 1  # the re-queued one


async def test_worker_recreates_a_lost_queue(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    async with open_storage(config) as storage:
        worker = Worker(client, storage, config)
        assert await worker.process_due_tasks() == 0  # creates the group
        await client.delete(f"{prefix}:worker")  # Redis lost it (restart without data, flush)
        with pytest.raises(BusError, match="NOGROUP"):
            await worker.process_due_tasks()
        assert await worker.process_due_tasks() == 0  # the next round creates it again
        await append_updates(client, prefix, room_stream_key(prefix, "after"),
                             edit_doc(client_id=301)[0])
        assert await worker.process_due_tasks() == 1
        assert await storage.retrieve_doc("after", "index") is not None
