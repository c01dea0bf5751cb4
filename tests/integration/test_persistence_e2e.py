"""End to end: edits through ysync servers reach storage via a separate worker process, the
stream is trimmed and deleted, and after Redis loses everything a new client gets the document
from storage alone - for every persistent backend."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ysync.streams import room_stream_key

from conftest import seconds
from harness import NodeClients, running_server, wait_until
from storage_fixtures import PERSISTENT_BACKENDS, storage_config, storage_env
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = [pytest.mark.anyio, pytest.mark.node]


@pytest.mark.parametrize("kind", PERSISTENT_BACKENDS)
async def test_edits_reach_storage_and_survive_losing_redis(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, prefix: str,
    node_dir: Path,
) -> None:
    storage = storage_config(kind, request, tmp_path)
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_WORKER_ENABLED": "no",
           "REDIS_TASK_DEBOUNCE": "300", "REDIS_MIN_MESSAGE_LIFETIME": "300",
           **storage_env(storage)}
    room = f"e2e {kind} é"
    stream = room_stream_key(prefix, room.replace(" ", "%20").replace("é", "%C3%A9"))
    client = aioredis.Redis.from_url(redis_url)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with NodeClients(node_dir) as clients:
            async with running_server(env) as a, running_server(env) as b:
                await clients.open("x", a.url, room)
                await clients.open("y", b.url, room)
                await clients.synced("x")
                await clients.synced("y")
                await clients.call("insertText", name="x", text="persist me")
                await clients.call("mapSet", name="y", key="by", value="y")
                await clients.call("arrayPush", name="x", values=[1, {"two": 2}])
                expected = {"text": "persist me", "map": {"by": "y"}, "arr": [1, {"two": 2}]}

                async def both_have_it() -> bool:
                    return [await clients.get(n) for n in ("x", "y")] == [expected, expected]

                await wait_until(both_have_it, 15, "both clients to converge")
                await clients.call("close", name="x")
                await clients.call("close", name="y")

            async def stream_gone() -> bool:
                return not await client.exists(stream)

            await wait_until(stream_gone, 30, "the worker to persist, trim and delete the stream")
            await client.delete(f"{prefix}:worker")  # Redis loses everything of this prefix
            async with running_server(env) as c:
                await clients.open("z", c.url, room)
                await clients.synced("z")
                assert await clients.get("z") == expected
    finally:
        worker.terminate()
        _out, err = await asyncio.wait_for(worker.communicate(), seconds(30))
        await client.aclose()
    assert worker.returncode == 0, err.decode()
