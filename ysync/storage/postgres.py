"""Snapshots as PostgreSQL rows, in y-redis's table (docs/protocol.md, y-redis
``src/storage/postgres.js``).

Table ``yredis_docs_v1 (room text, doc text, r SERIAL, update bytea, sv bytea,
PRIMARY KEY (room, doc, r))``, created if missing. One row per snapshot: ``update`` is a v2
update, ``sv`` its state vector (v1 encoding), ``r`` the reference (shown as a decimal string).
``room`` and ``doc`` hold the names as they are (not URI-encoded), as y-redis stores them.
They need no shortening: ``text`` has no length limit, and the primary key's index takes rows of
up to about 2.7 kB, far above the 256-byte rooms a ysync server accepts (nor can an accepted
room hold the NUL that ``text`` refuses).

One connection serves the process, one statement at a time (a lock); a broken connection is
replaced on the next call. Every statement has a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import psycopg
from psycopg import errors as pg_errors

from ysync.errors import StorageError
from ysync.storage.base import Storage, StoredDoc, merge_snapshots

log = logging.getLogger(__name__)

T = TypeVar("T")

TABLE = "yredis_docs_v1"

_CREATE_TABLE = f"""
      CREATE TABLE IF NOT EXISTS {TABLE} (
          room        text,
          doc         text,
          r           SERIAL,
          update      bytea,
          sv          bytea,
          PRIMARY KEY (room,doc,r)
      );
"""


class PostgresStorage(Storage):
    """Snapshots in PostgreSQL. Create it with :meth:`open`."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self._url = url
        self.timeout = timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, url: str, *, call_timeout: float = 30.0) -> PostgresStorage:
        """Connect and create the table if it is missing.

        ``call_timeout``: seconds for one statement, kept for the storage's lifetime.
        """
        store = cls(url, timeout=call_timeout)
        try:
            await store._execute("creating the table", store._create_table)
        except StorageError:
            await store.aclose()
            raise
        return store

    @staticmethod
    async def _create_table(conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
        row = await cur.fetchone()
        if row is not None and row[0]:
            return  # checked first, as y-redis does, to avoid a notice when it exists
        try:
            await conn.execute(_CREATE_TABLE)
        except (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateObject):
            # another process created it at the same moment (PostgreSQL then reports the
            # table, its row type or its index as existing, depending on who was first)
            return

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self.timeout)))
        return self._conn

    async def _execute(self, what: str,
                       func: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        try:
            async with self._lock:
                with anyio.fail_after(self.timeout):
                    try:
                        return await func(await self._connection())
                    except BaseException:
                        # a statement cut short (timeout, cancellation) leaves the connection in
                        # an unknown state: start afresh next time
                        if self._conn is not None and not self._conn.closed:
                            conn, self._conn = self._conn, None
                            with anyio.CancelScope(shield=True):
                                await conn.close()
                        raise
        except TimeoutError as exc:
            raise StorageError(f"postgres storage: {what} timed out after {self.timeout} s") \
                from exc
        except psycopg.Error as exc:
            raise StorageError(f"postgres storage: {what} failed: {exc}") from exc

    async def check(self) -> None:
        async def select_one(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT 1")

        await self._execute("checking the connection", select_one)

    async def retrieve_doc(self, room: str, docid: str) -> StoredDoc | None:
        async def select(conn: psycopg.AsyncConnection[Any]) -> list[tuple[bytes, int]]:
            cur = await conn.execute(
                f"SELECT update,r from {TABLE} WHERE room = %s AND doc = %s ORDER BY r",
                (room, docid))
            return [(bytes(update), int(r)) for update, r in await cur.fetchall()]

        rows = await self._execute(f"reading {room!r}/{docid!r}", select)
        if not rows:
            return None
        updates = [update for update, _ in rows]
        merged = await anyio.to_thread.run_sync(merge_snapshots, updates)
        return StoredDoc(merged, tuple(str(r) for _, r in rows))

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        from ysync.updates import state_vector_from_v2

        data = bytes(update_v2)
        state_vector = bytes(await anyio.to_thread.run_sync(state_vector_from_v2, data))

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                f"INSERT INTO {TABLE} (room,doc,r,update, sv) VALUES (%s,%s,DEFAULT,%s,%s)",
                (room, docid, data, state_vector))

        await self._execute(f"writing {room!r}/{docid!r}", insert)
        log.debug("persisted %r/%r (%d bytes)", room, docid, len(data))

    async def retrieve_state_vector(self, room: str, docid: str) -> bytes | None:
        """The ``sv`` column of the document's row, as y-redis reads it.

        y-redis reads one arbitrary row; when a document has several rows (two workers persisted
        at once) that may be an older snapshot, so then the state vector of the merged rows is
        computed instead.
        """
        async def select(conn: psycopg.AsyncConnection[Any]) -> list[bytes]:
            cur = await conn.execute(
                f"SELECT sv from {TABLE} WHERE room = %s AND doc = %s LIMIT 2", (room, docid))
            return [bytes(sv) for (sv,) in await cur.fetchall()]

        rows = await self._execute(f"reading the state vector of {room!r}/{docid!r}", select)
        if not rows:
            return None
        if len(rows) == 1:
            return rows[0]
        return await super().retrieve_state_vector(room, docid)

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        ids: list[int] = []
        for reference in references:
            try:
                ids.append(int(reference))
            except ValueError:
                log.warning("ignoring reference %r: not a row id", reference)
        if not ids:
            return

        async def delete(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                f"DELETE FROM {TABLE} WHERE room = %s AND doc = %s AND r = ANY(%s)",
                (room, docid, ids))

        await self._execute(f"deleting snapshots of {room!r}/{docid!r}", delete)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
