"""The GCS backend against gcp-storage-emulator: y-redis's S3 object names, v2 bodies, errors."""

from __future__ import annotations

import re
from typing import Any

import pycrdt
import pytest

from ysync.errors import StorageError
from ysync.storage.gcs import (
    MAX_OBJECT_NAME_BYTES,
    MAX_PREFIX_BYTES,
    GcsStorage,
    object_prefix,
)
from ysync.storage.names import fit_part
from ysync.updates import v1_to_v2

from storage_fixtures import GcsEmulator
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def snapshot(text: str, client_id: int = 7) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["t"] = pycrdt.Text(text)
    return v1_to_v2(doc.get_update())


async def test_object_names_are_y_redis_s3_names(gcs_emulator: GcsEmulator) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, call_timeout=10)
    try:
        await store.persist_doc("my room é", "index", snapshot("x"))
        objects = gcs_emulator.objects(bucket)
        [name] = objects
        assert re.fullmatch(rf"my%20room%20%C3%A9/index/{UUID}", name)
        assert objects[name] == snapshot("x")
        stored = await store.retrieve_doc("my room é", "index")
        assert stored is not None and stored.references == (name,)
    finally:
        await store.aclose()


async def test_prefix_is_a_folder(gcs_emulator: GcsEmulator) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, "tenant-a", call_timeout=10)
    other = await GcsStorage.open(bucket, "tenant-ab/", call_timeout=10)
    try:
        await store.persist_doc("r", "index", snapshot("a"))
        await other.persist_doc("r", "index", snapshot("b"))
        names = sorted(gcs_emulator.objects(bucket))
        assert re.fullmatch(rf"tenant-a/r/index/{UUID}", names[0])
        assert re.fullmatch(rf"tenant-ab/r/index/{UUID}", names[1])
        stored = await store.retrieve_doc("r", "index")
        assert stored is not None and stored.update_v2 == snapshot("a")
    finally:
        await store.aclose()
        await other.aclose()


async def test_room_prefix_of_another_room_is_kept_apart(gcs_emulator: GcsEmulator) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, call_timeout=10)
    try:
        await store.persist_doc("a", "index", snapshot("a"))
        await store.persist_doc("a/index", "index", snapshot("nested"))
        stored = await store.retrieve_doc("a", "index")
        assert stored is not None and len(stored.references) == 1
        assert stored.update_v2 == snapshot("a")
    finally:
        await store.aclose()


async def test_a_snapshot_deleted_between_list_and_read_is_listed_again(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, call_timeout=10)
    try:
        await store.persist_doc("r", "index", snapshot("one", client_id=1))
        await store.persist_doc("r", "index", snapshot("two", client_id=2))
        victim = sorted(gcs_emulator.objects(bucket))[0]
        client = store._client
        real_list = client.list_blobs

        def list_then_delete(*args: Any, **kwargs: Any) -> list[Any]:
            blobs = list(real_list(*args, **kwargs))
            if victim in [blob.name for blob in blobs]:
                # a worker deletes it right after our listing: the next listing lacks it
                client.bucket(bucket).blob(victim).delete()
            return blobs

        monkeypatch.setattr(client, "list_blobs", list_then_delete)
        stored = await store.retrieve_doc("r", "index")
        assert stored is not None
        assert len(stored.references) == 1 and victim not in stored.references
    finally:
        await store.aclose()


async def test_deleting_an_already_deleted_reference_is_fine(gcs_emulator: GcsEmulator) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, call_timeout=10)
    try:
        await store.persist_doc("r", "index", snapshot("x"))
        stored = await store.retrieve_doc("r", "index")
        assert stored is not None
        await store.delete_references("r", "index", stored.references)
        await store.delete_references("r", "index", stored.references)
        assert await store.retrieve_doc("r", "index") is None
    finally:
        await store.aclose()


async def test_missing_bucket_is_a_storage_error(gcs_emulator: GcsEmulator) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        await GcsStorage.open("no-such-bucket-ysync", call_timeout=10)


async def test_unreachable_endpoint_is_a_storage_error(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    with pytest.raises(StorageError):
        await GcsStorage.open("bucket", call_timeout=5)


def test_names_that_fit_gcs_are_y_redis_names_even_beyond_a_file_name() -> None:
    room = "%25" * 85  # 425 bytes once encoded: too long for a file, not for GCS
    assert object_prefix("p/", room, "index") == f"p/{'%2525' * 85}/index/"


def test_names_beyond_gcs_limit_are_shortened_to_fit() -> None:
    prefix = "p" * (MAX_PREFIX_BYTES - 1) + "/"
    folder = object_prefix(prefix, "%25" * 85, "d" * 300)
    assert len(folder.encode()) + 36 <= MAX_OBJECT_NAME_BYTES
    room_part, doc_part = folder[len(prefix):].split("/")[:2]
    assert room_part == fit_part("%2525" * 85) and doc_part == fit_part("d" * 300)


async def test_a_prefix_that_leaves_no_room_for_names_is_refused() -> None:
    with pytest.raises(StorageError, match="prefix"):
        await GcsStorage.open("bucket", "p" * MAX_PREFIX_BYTES, call_timeout=5)


async def test_a_long_room_behind_the_longest_prefix_is_stored(
    gcs_emulator: GcsEmulator
) -> None:
    bucket = gcs_emulator.new_bucket()
    store = await GcsStorage.open(bucket, "p" * (MAX_PREFIX_BYTES - 1), call_timeout=10)
    try:
        room = ":" * 256  # 768 bytes once encoded (%3A)
        await store.persist_doc(room, "index", snapshot("long"))
        [name] = gcs_emulator.objects(bucket)
        assert len(name.encode()) <= MAX_OBJECT_NAME_BYTES and "%~" in name
        stored = await store.retrieve_doc(room, "index")
        assert stored is not None and stored.update_v2 == snapshot("long")
        await store.delete_references(room, "index", stored.references)
        assert gcs_emulator.objects(bucket) == {}
    finally:
        await store.aclose()
