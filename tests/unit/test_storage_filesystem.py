"""The filesystem backend: y-redis's S3 object names as paths, atomic writes, races."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from ysync.errors import StorageError
from ysync.storage import filesystem
from ysync.storage.filesystem import FilesystemStorage, folder_name
from ysync.updates import v1_to_v2

pytestmark = pytest.mark.anyio

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def snapshot(text: str, client_id: int = 7) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["t"] = pycrdt.Text(text)
    return v1_to_v2(doc.get_update())


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_names_are_the_s3_object_names(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("my room é", "sub/doc", snapshot("x"))
    [name] = files(tmp_path)
    assert re.fullmatch(rf"my%20room%20%C3%A9/sub%2Fdoc/{UUID}", name)
    stored = await store.retrieve_doc("my room é", "sub/doc")
    assert stored is not None and stored.references == (name,)
    assert (tmp_path / name).read_bytes() == snapshot("x")


def test_folder_names_cannot_escape() -> None:
    assert folder_name(".") == "%2E"
    assert folder_name("..") == "%2E%2E"
    assert folder_name("") == "%"
    assert folder_name("../x") == "..%2Fx"
    assert folder_name("a'(b)!*~") == "a'(b)!*~"


async def test_temporary_files_are_ignored(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("r", "index", snapshot("complete"))
    folder = tmp_path / "r" / "index"
    # what a writer killed mid-write leaves behind
    (folder / f".tmp-{uuid.uuid4()}").write_bytes(b"\x00\x01torn")
    (folder / "not-a-snapshot").write_bytes(b"junk")
    stored = await store.retrieve_doc("r", "index")
    assert stored is not None and len(stored.references) == 1
    assert stored.update_v2 == snapshot("complete")


async def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemStorage(tmp_path)

    def broken_rename(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(filesystem.os, "rename", broken_rename)
    with pytest.raises(StorageError, match="No space left"):
        await store.persist_doc("r", "index", snapshot("x"))
    assert files(tmp_path) == []
    assert await store.retrieve_doc("r", "index") is None


async def test_writes_are_fsynced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(filesystem.os, "fsync", fsync)
    monkeypatch.setattr(filesystem.os, "rename", rename)
    store = FilesystemStorage(tmp_path / "new")
    await store.persist_doc("r", "index", snapshot("x"))
    # the new folders were made durable, then the file, then the rename
    assert events[-3:] == ["fsync-file", "rename", "fsync-dir"]
    assert events.count("fsync-dir") >= 3


async def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("r", "index", snapshot("a"))
    folder = tmp_path / "r" / "index"
    stale, fresh = folder / f".tmp-{uuid.uuid4()}", folder / f".tmp-{uuid.uuid4()}"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (1, 1))
    await store.persist_doc("r", "index", snapshot("b"))
    assert not stale.exists()
    assert fresh.exists()


async def test_a_snapshot_replaced_between_list_and_read_is_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("r", "index", snapshot("old", client_id=1))
    folder = tmp_path / "r" / "index"
    [old] = os.listdir(folder)
    newer = str(uuid.uuid4())
    real_listdir = os.listdir
    calls = []

    def listdir_then_replace(path: Any) -> list[str]:
        names = real_listdir(path)
        if not calls:
            # right after our listing, a worker persists a newer snapshot and deletes the old
            (folder / newer).write_bytes(snapshot("newer", client_id=2))
            (folder / old).unlink()
        calls.append(names)
        return names

    monkeypatch.setattr(filesystem.os, "listdir", listdir_then_replace)
    stored = await store.retrieve_doc("r", "index")
    assert len(calls) == 2
    assert stored is not None and stored.references == (f"r/index/{newer}",)
    assert stored.update_v2 == snapshot("newer", client_id=2)


async def test_references_outside_the_document_are_not_deleted(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("a", "index", snapshot("a"))
    await store.persist_doc("b", "index", snapshot("b"))
    b = await store.retrieve_doc("b", "index")
    assert b is not None
    await store.delete_references("a", "index", [*b.references, "../b/index", "a/index/.."])
    assert await store.retrieve_doc("b", "index") is not None
    assert await store.retrieve_doc("a", "index") is not None


@pytest.mark.parametrize("room", ["a" * 256, "%25" * 85, ":" * 256, "é" * 200],
                         ids=["256-bytes", "85-escapes", "encoded-thrice", "non-ascii"])
async def test_rooms_too_long_for_a_file_name_are_stored(tmp_path: Path, room: str) -> None:
    store = FilesystemStorage(tmp_path)
    other = room[:-1] + "b"
    await store.persist_doc(room, "index", snapshot("long", client_id=1))
    await store.persist_doc(other, "index", snapshot("other", client_id=2))
    stored = await store.retrieve_doc(room, "index")
    assert stored is not None and stored.update_v2 == snapshot("long", client_id=1)
    [reference] = stored.references
    folder = reference.split("/")[0]
    assert len(folder.encode()) <= 255 and "%~" in folder
    assert reference in files(tmp_path)
    await store.delete_references(room, "index", stored.references)
    assert await store.retrieve_doc(room, "index") is None
    assert await store.retrieve_doc(other, "index") is not None


async def test_names_that_fit_keep_the_s3_name(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    await store.persist_doc("%25" * 51, "index", snapshot("x"))
    [name] = files(tmp_path)
    assert name.startswith(f"{'%2525' * 51}/index/")  # exactly 255 bytes once encoded


async def test_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = FilesystemStorage(blocker / "storage")
    with pytest.raises(StorageError):
        await store.persist_doc("r", "index", snapshot("x"))
