"""The PostgreSQL backend: y-redis's table, rows and queries."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pycrdt
import pytest

from ysync.errors import StorageError
from ysync.storage.postgres import TABLE, PostgresStorage
from ysync.updates import v1_to_v2

from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


def snapshot(text: str, client_id: int = 7) -> tuple[bytes, bytes]:
    """(v2 update, v1 state vector) of a doc with one text."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["t"] = pycrdt.Text(text)
    return v1_to_v2(doc.get_update()), doc.get_state()


def rows(url: str, room: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT room, doc, r, update, sv FROM {TABLE} WHERE room = %s ORDER BY r",
            (room,)).fetchall()


async def test_table_is_y_redis_table(postgres_url: str) -> None:
    store = await PostgresStorage.open(postgres_url, call_timeout=10)
    await store.aclose()
    with psycopg.connect(postgres_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, column_default IS NOT NULL FROM "
            "information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            (TABLE,)).fetchall()
        key = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (TABLE,)).fetchall()
    assert columns == [("room", "text", False), ("doc", "text", False), ("r", "integer", True),
                       ("update", "bytea", False), ("sv", "bytea", False)]
    assert sorted(name for (name,) in key) == ["doc", "r", "room"]


async def test_rows_are_written_as_y_redis_writes_them(postgres_url: str) -> None:
    room = f"room é {uuid.uuid4().hex[:6]}"
    store = await PostgresStorage.open(postgres_url, call_timeout=10)
    try:
        update, sv = snapshot("hello")
        await store.persist_doc(room, "index", update)
        [(r_room, r_doc, r, r_update, r_sv)] = rows(postgres_url, room)
        assert (r_room, r_doc) == (room, "index")  # names as they are, not URI-encoded
        assert bytes(r_update) == update
        assert bytes(r_sv) == sv
        stored = await store.retrieve_doc(room, "index")
        assert stored is not None and stored.references == (str(r),)
        assert await store.retrieve_state_vector(room, "index") == sv
    finally:
        await store.aclose()


async def test_rows_written_by_y_redis_are_read(postgres_url: str) -> None:
    room = f"room {uuid.uuid4().hex[:6]}"
    store = await PostgresStorage.open(postgres_url, call_timeout=10)
    try:
        first, sv1 = snapshot("one", client_id=1)
        second, _ = snapshot("two", client_id=2)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for update, sv in ((first, sv1), (second, b"")):
                # the statement of y-redis's persistDoc
                conn.execute(f"INSERT INTO {TABLE} (room,doc,r,update, sv) "
                             "VALUES (%s,%s,DEFAULT,%s,%s)", (room, "index", update, sv))
        stored = await store.retrieve_doc(room, "index")
        assert stored is not None and len(stored.references) == 2
        # two rows: the state vector is that of both, not of one arbitrary row
        merged_sv = await store.retrieve_state_vector(room, "index")
        assert merged_sv is not None and merged_sv not in (sv1, b"")
        await store.delete_references(room, "index", stored.references[:1])
        assert len(rows(postgres_url, room)) == 1
    finally:
        await store.aclose()


async def test_concurrent_opens_create_the_table_once(postgres_url: str) -> None:
    schema_url = postgres_url
    with psycopg.connect(schema_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    stores: list[PostgresStorage] = []

    async def open_one() -> None:
        stores.append(await PostgresStorage.open(schema_url, call_timeout=10))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(open_one)
    for store in stores:
        await store.aclose()
    assert len(stores) == 4


async def test_storage_survives_a_dropped_connection(postgres_url: str) -> None:
    room = f"room {uuid.uuid4().hex[:6]}"
    store = await PostgresStorage.open(postgres_url, call_timeout=10)
    try:
        await store.persist_doc(room, "index", snapshot("x")[0])
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageError):
            await store.retrieve_doc(room, "index")
        assert await store.retrieve_doc(room, "index") is not None
    finally:
        await store.aclose()


async def test_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        await PostgresStorage.open("postgresql://127.0.0.1:1/nothing", call_timeout=5)
