"""Versions beside the snapshots (ysync/storage/versions.py), against every backend: stored,
listed, read and deleted, never seen by the snapshot readers, and in the layout docs/api.md
describes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from workers.history import record_version
from ysync.config import HistoryConfig
from ysync.storage.base import Storage
from ysync.storage.versions import (
    VERSIONS_FOLDER,
    FilesystemVersions,
    Version,
    new_version_id,
    version_time,
    versions_of,
)
from ysync.updates import state_vector_from_v2, v1_to_v2

from storage_fixtures import any_storage as any_storage  # noqa: F401 - fixture
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import make_config, unique_room
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


def snapshot(client_id: int, text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["text"] = pycrdt.Text(text)
    return v1_to_v2(doc.get_update())


@pytest.fixture
def storage(any_storage: Storage) -> Storage:
    return any_storage


room_name = unique_room


async def test_versions_are_stored_listed_read_and_deleted(storage: Storage) -> None:
    room = room_name()
    store = versions_of(storage)
    assert versions_of(storage) is store
    assert await store.versions(room, "index") == []
    made = []
    for i in range(3):
        data = snapshot(10 + i, f"text {i}")
        version = Version(new_version_id(1_700_000_000_000 + i), 1_700_000_000_000 + i,
                          len(data), state_vector_from_v2(data))
        await store.add(room, "index", version, data)
        made.append((version, data))
    listed = await store.versions(room, "index")
    assert listed == [v for v, _ in made]  # oldest first, records whole
    assert await store.ids(room, "index") == [v.id for v, _ in made]
    assert [version_time(v.id) for v in listed] == [v.time_ms for v in listed]
    for version, data in made:
        assert await store.read(room, "index", version.id) == data
    assert await store.read(room, "index", new_version_id(1)) is None
    assert await store.read(room, "index", "../../etc/passwd") is None
    assert await store.read(room, "other", made[0][0].id) is None
    await store.delete(room, "index", [made[0][0].id, new_version_id(2)])
    assert await store.versions(room, "index") == [made[1][0], made[2][0]]
    assert await store.read(room, "index", made[0][0].id) is None


async def test_snapshot_readers_never_see_versions(storage: Storage) -> None:
    room = room_name()
    data = snapshot(7, "a version")
    version = Version(new_version_id(1_700_000_000_000), 1_700_000_000_000, len(data),
                      state_vector_from_v2(data))
    await versions_of(storage).add(room, "index", version, data)
    assert await storage.retrieve_doc(room, "index") is None
    await storage.persist_doc(room, "index", snapshot(8, "the snapshot"))
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None and len(stored.references) == 1
    assert state_vector_from_v2(stored.update_v2) != version.state_vector
    await storage.delete_references(room, "index", stored.references)
    assert await storage.retrieve_doc(room, "index") is None
    assert await versions_of(storage).versions(room, "index") == [version]


async def test_the_worker_records_and_thins_versions(storage: Storage) -> None:
    room = room_name()
    config = dataclasses.replace(make_config(), history=HistoryConfig(
        enabled=True, keep_all=60, keep_hourly=0, keep_daily=0))
    now = 1_700_000_000_000
    first = await record_version(storage, config, room, "index", snapshot(1, "a"), now_ms=now)
    second = await record_version(storage, config, room, "index", snapshot(1, "ab"),
                                  now_ms=now + 30_000)
    assert first is not None and second is not None
    assert [v.id for v in await versions_of(storage).versions(room, "index")] == \
        [first.id, second.id]
    third = await record_version(storage, config, room, "index", snapshot(1, "abc"),
                                 now_ms=now + 70_000)
    assert third is not None
    # the first is now older than keep_all, and nothing older is kept
    assert [v.id for v in await versions_of(storage).versions(room, "index")] == \
        [second.id, third.id]


def test_filesystem_layout(tmp_path: Path) -> None:
    store = FilesystemVersions(tmp_path)
    folder = store._folder("my%20room", "index")
    assert folder == tmp_path / VERSIONS_FOLDER / "my%2520room" / "index"
    # no encoded room can be the versions folder: encodeURIComponent writes "%" only as "%XX"
    assert not os.path.exists(tmp_path / "%ysync-versions")
