"""``ysync-worker`` as a process: --once (cron), continuous with SIGTERM/SIGINT, bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from ysync.storage.filesystem import FilesystemStorage
from ysync.streams import StreamId, room_stream_key

from conftest import seconds
from storage_fixtures import append_updates, doc_json_of_v2, edit_doc, wait_past_ms, wait_until

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


def worker_env(**settings: str) -> dict[str, str]:
    """A clean environment (nothing of ours inherited) plus ``settings``."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
           "HOME": os.environ.get("HOME", "/tmp")}
    return {**env, **settings}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


async def test_help_documents_both_modes(tmp_path: Path) -> None:
    result = await anyio.run_process(command("--help"), env=worker_env(), cwd=tmp_path)
    text = result.stdout.decode()
    assert "--once" in text and "cron" in text.lower() and "SIGTERM" in text


async def test_without_redis_it_says_so(tmp_path: Path) -> None:
    result = await anyio.run_process(command("--once"), env=worker_env(), cwd=tmp_path,
                                     check=False)
    assert result.returncode == 2
    assert "REDIS" in result.stderr.decode()


async def test_unreachable_storage_exits_1(tmp_path: Path, redis_url: str, prefix: str) -> None:
    env = worker_env(REDIS=redis_url, REDIS_PREFIX=prefix, POSTGRES="postgresql://127.0.0.1:1/x",
                     YSYNC_STORAGE_TIMEOUT="5")
    result = await anyio.run_process(command("--once"), env=env, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "postgres" in result.stderr.decode()


async def test_once_processes_due_tasks_and_exits_0(
    tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    store = tmp_path / "storage"
    env = worker_env(REDIS=redis_url, REDIS_PREFIX=prefix, REDIS_TASK_DEBOUNCE="0",
                     REDIS_MIN_MESSAGE_LIFETIME="0", YSYNC_STORAGE_KIND="filesystem",
                     YSYNC_STORAGE_PATH=str(store), LOG="debug")
    rooms = ["one", "two", "three"]
    expected = {}
    for i, room in enumerate(rooms):
        updates, expected[room] = edit_doc(client_id=50 + i)
        await append_updates(client, prefix, room_stream_key(prefix, room), updates)
    last = StreamId.parse((await client.xrange(room_stream_key(prefix, "three")))[-1][0])
    await wait_past_ms(client, last.ms)

    first = await anyio.run_process(command("--once"), env=env, cwd=tmp_path, check=False)
    assert first.returncode == 0, first.stderr.decode()
    storage = FilesystemStorage(store)
    for room in rooms:
        stored = await storage.retrieve_doc(room, "index")
        assert stored is not None and doc_json_of_v2(stored.update_v2) == expected[room]
    # each task was processed once: the re-queued tasks wait for the next run
    assert await client.xlen(f"{prefix}:worker") == len(rooms)
    # two more runs: trim everything, then delete the empty streams and their tasks
    for _ in range(2):
        newest = StreamId.parse((await client.xrange(f"{prefix}:worker"))[-1][0])
        await wait_past_ms(client, newest.ms)
        run = await anyio.run_process(command("--once"), env=env, cwd=tmp_path, check=False)
        assert run.returncode == 0, run.stderr.decode()
    for room in rooms:
        assert not await client.exists(room_stream_key(prefix, room))
    assert await client.xlen(f"{prefix}:worker") == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_continuous_worker_stops_cleanly_on_signal(
    signum: signal.Signals, tmp_path: Path, redis_url: str, prefix: str,
    client: aioredis.Redis
) -> None:
    store = tmp_path / "storage"
    env = worker_env(REDIS=redis_url, REDIS_PREFIX=prefix, REDIS_TASK_DEBOUNCE="0",
                     YSYNC_STORAGE_KIND="filesystem", YSYNC_STORAGE_PATH=str(store),
                     YSYNC_WORKER_IDLE_WAIT="0.05")
    updates, expected = edit_doc(client_id=60)
    await append_updates(client, prefix, room_stream_key(prefix, "live"), updates)
    storage = FilesystemStorage(store)
    proc = await anyio.open_process(command(), env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def persisted() -> bool:
            return await storage.retrieve_doc("live", "index") is not None

        await wait_until(persisted, 20, "the worker to persist the document")
        proc.send_signal(signum)
        with anyio.fail_after(seconds(10)):
            code = await proc.wait()
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()
    stored = await storage.retrieve_doc("live", "index")
    assert stored is not None and doc_json_of_v2(stored.update_v2) == expected
