"""The storage contract, checked against every backend (memory, filesystem, GCS, PostgreSQL,
S3)."""

from __future__ import annotations

import uuid
from typing import Any

import pycrdt
import pytest

from ysync.protocol import read_var_uint
from ysync.storage.base import Storage
from ysync.streams import encode_uri_component
from ysync.updates import v1_to_v2, v2_to_v1

from storage_fixtures import any_storage as any_storage  # noqa: F401 - fixture
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture
from storage_fixtures import unique_room

pytestmark = pytest.mark.anyio


def snapshot(client_id: int, **texts: str) -> tuple[bytes, pycrdt.Doc[Any]]:
    """A v2 snapshot of a doc written by ``client_id``: one text root per keyword."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    for name, value in texts.items():
        doc[name] = pycrdt.Text(value)
    return v1_to_v2(doc.get_update()), doc


def decode_state_vector(sv: bytes) -> dict[int, int]:
    count, pos = read_var_uint(sv, 0)
    out = {}
    for _ in range(count):
        client, pos = read_var_uint(sv, pos)
        clock, pos = read_var_uint(sv, pos)
        out[client] = clock
    return out


def text_of(update_v2: bytes, name: str) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(v2_to_v1(update_v2))
    return str(doc.get(name, type=pycrdt.Text))


@pytest.fixture
def storage(any_storage: Storage) -> Storage:
    return any_storage


room_name = unique_room


async def test_nothing_stored(storage: Storage) -> None:
    room = room_name()
    assert await storage.retrieve_doc(room, "index") is None
    assert await storage.retrieve_state_vector(room, "index") is None
    await storage.delete_references(room, "index", [])


async def test_persist_then_retrieve_the_same_snapshot(storage: Storage) -> None:
    room = room_name()
    update, doc = snapshot(11, text="hello")
    await storage.persist_doc(room, "index", update)
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None
    assert stored.update_v2 == update
    assert len(stored.references) == 1
    sv = await storage.retrieve_state_vector(room, "index")
    assert sv is not None
    assert decode_state_vector(sv) == decode_state_vector(doc.get_state())


async def test_snapshots_are_merged_and_references_deleted(storage: Storage) -> None:
    room = room_name()
    first, _ = snapshot(21, a="first")
    second, _ = snapshot(22, b="second")
    await storage.persist_doc(room, "index", first)
    await storage.persist_doc(room, "index", second)
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None
    assert len(stored.references) == 2
    assert text_of(stored.update_v2, "a") == "first"
    assert text_of(stored.update_v2, "b") == "second"
    sv = await storage.retrieve_state_vector(room, "index")
    assert sv is not None and decode_state_vector(sv) == {21: 5, 22: 6}

    # the worker's step: persist the merged doc, then delete what it merged
    await storage.persist_doc(room, "index", stored.update_v2)
    await storage.delete_references(room, "index", stored.references)
    after = await storage.retrieve_doc(room, "index")
    assert after is not None
    assert len(after.references) == 1
    assert not set(after.references) & set(stored.references)
    assert text_of(after.update_v2, "a") == "first"
    assert text_of(after.update_v2, "b") == "second"

    await storage.delete_references(room, "index", after.references)
    assert await storage.retrieve_doc(room, "index") is None


async def test_unknown_references_are_ignored(storage: Storage) -> None:
    room = room_name()
    update, _ = snapshot(31, t="x")
    await storage.persist_doc(room, "index", update)
    await storage.delete_references(room, "index", ["42", "nope", "a/b/c"])
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None and len(stored.references) == 1
    # another document's references do not delete this one's
    other = room_name()
    await storage.persist_doc(other, "index", update)
    other_stored = await storage.retrieve_doc(other, "index")
    assert other_stored is not None
    await storage.delete_references(room, "index", other_stored.references)
    assert await storage.retrieve_doc(other, "index") is not None


@pytest.mark.parametrize("room,docid", [
    ("plain", "index"), ("with space", "index"), ("é ü 中文", "sub/doc"), (".", ".."),
    ("a%20b", "index"), ("a:room:b", "c:d"), ("", "index"), ("x", ""),
])
async def test_names_are_kept_apart(storage: Storage, room: str, docid: str) -> None:
    if type(storage).__name__ == "GcsStorage" and ".." in (room, docid):
        pytest.skip("gcp-storage-emulator cannot store a '..' name segment (real GCS can)")
    suffix = uuid.uuid4().hex[:6]
    room = room + suffix if room else room
    if not room:
        # the empty room name is shared by every test run: start from nothing
        stored = await storage.retrieve_doc(room, docid)
        if stored is not None:
            await storage.delete_references(room, docid, stored.references)
    update, _ = snapshot(41, t=f"{room}|{docid}")
    await storage.persist_doc(room, docid, update)
    stored = await storage.retrieve_doc(room, docid)
    assert stored is not None and text_of(stored.update_v2, "t") == f"{room}|{docid}"
    assert await storage.retrieve_doc(room + "x", docid) is None
    assert await storage.retrieve_doc(room, docid + "x") is None
    await storage.delete_references(room, docid, stored.references)
    assert await storage.retrieve_doc(room, docid) is None


@pytest.mark.parametrize("head", ["a" * 248, "%25" * 82, ":" * 248],
                         ids=["256-bytes", "82-escapes", "encoded-thrice"])
async def test_the_longest_rooms_the_server_accepts_are_storable(storage: Storage,
                                                                 head: str) -> None:
    # unique per run (the backends are shared), as long as the upgrade allows (256 bytes),
    # and longer than a file name (255 bytes) once encoded
    room = head + uuid.uuid4().hex[:8]
    assert len(room) <= 256 and len(encode_uri_component(room)) > 255
    other = room[:-1] + ("0" if room[-1] != "0" else "1")
    update, _ = snapshot(51, t="long")
    await storage.persist_doc(room, "index", update)
    stored = await storage.retrieve_doc(room, "index")
    assert stored is not None and text_of(stored.update_v2, "t") == "long"
    assert await storage.retrieve_doc(other, "index") is None
    await storage.delete_references(room, "index", stored.references)
    assert await storage.retrieve_doc(room, "index") is None
