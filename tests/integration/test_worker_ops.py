"""Operator tasks: showing a document (stored + pending) and cleaning a key prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt
import pytest
import redis.asyncio as aioredis

from workers.compactor import Worker
from ysync.config import StorageConfig
from ysync.errors import ConfigError
from ysync.ops import clean_prefix, doc_to_json, show_doc
from ysync.storage.factory import open_storage
from ysync.streams import room_stream_key

from storage_fixtures import append_updates, edit_doc, make_config

pytestmark = pytest.mark.anyio


def test_doc_to_json_reads_every_root_type() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    doc["map"] = pycrdt.Map({"n": 1, "f": 1.5, "bin": b"\x01\x02", "nested": pycrdt.Text("in")})
    doc["text"] = pycrdt.Text("hello")
    doc["array"] = pycrdt.Array([1, "two", pycrdt.Map({"three": 3})])
    xml = doc["xml"] = pycrdt.XmlFragment()
    xml.children.append(pycrdt.XmlElement("p", {"class": "c"}, [pycrdt.XmlText("hi")]))
    doc["emptied"] = pycrdt.Text("gone")
    del doc["emptied"][0:4]
    doc["never used"] = pycrdt.Map()  # not in the update at all
    loaded: pycrdt.Doc[Any] = pycrdt.Doc()
    loaded.apply_update(doc.get_update())  # as the server loads it: root types unknown
    assert doc_to_json(loaded) == {
        "map": {"n": 1, "f": 1.5, "bin": [1, 2], "nested": "in"},
        "text": "hello",
        "array": [1, "two", {"three": 3}],
        "xml": '<p class="c">hi</p>',
        "emptied": None,  # its type cannot be told any more
    }


async def test_show_doc_merges_storage_and_stream(
    tmp_path: Path, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix, storage=StorageConfig(
        kind="filesystem", path=str(tmp_path / "storage")))
    updates, expected = edit_doc(client_id=80, rounds=4)
    key = room_stream_key(prefix, "shown", "sub")
    await append_updates(client, prefix, key, updates[:2])
    async with open_storage(config) as storage:
        await Worker(client, storage, config).process_due_tasks()
    await client.delete(key)  # only the snapshot has the first updates now
    await append_updates(client, prefix, key, updates[2:])  # pending in the stream
    assert await show_doc(config, "shown", "sub") == expected
    assert await show_doc(config, "shown", "sub", client=client) == expected
    assert await show_doc(config, "nothing here") == {}


async def test_show_doc_needs_redis(tmp_path: Path) -> None:
    config = make_config(redis_url="")
    with pytest.raises(ConfigError, match="REDIS"):
        await show_doc(config, "r")


async def test_clean_prefix_deletes_only_that_prefix(
    redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    other = f"{prefix}x"
    glob_like = f"{prefix}*"
    for p in (prefix, other, glob_like):
        await append_updates(client, p, room_stream_key(p, "a"), edit_doc(1)[0])
        await append_updates(client, p, room_stream_key(p, "b"), edit_doc(2)[0])
    try:
        assert await clean_prefix(client, glob_like) == 3  # two streams and the worker queue
        assert await client.exists(room_stream_key(prefix, "a")) == 1
        assert await clean_prefix(client, prefix) == 3
        assert await client.exists(room_stream_key(other, "a")) == 1
        assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []
    finally:
        await clean_prefix(client, other)
