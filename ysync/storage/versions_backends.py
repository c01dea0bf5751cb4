"""Version stores of the GCS, S3 and PostgreSQL storages (layout: :mod:`ysync.storage.versions`).

Imported only when such a storage is used: their client libraries are optional. The GCS and S3
stores keep versions as objects through their storage's own object operations
(:class:`ysync.storage.objects.ObjectStore`); PostgreSQL's uses its connection and timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ysync.storage.base import Storage
from ysync.storage.versions import (
    VERSIONS_FOLDER,
    ObjectVersions,
    Version,
    VersionStore,
)

#: The table of versions in PostgreSQL (y-redis reads only ``yredis_docs_v1``).
VERSIONS_TABLE = "ysync_versions_v1"

_CREATE_TABLE = f"""
      CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
          room        text,
          doc         text,
          id          text,
          time_ms     bigint,
          size        integer,
          sv          bytea,
          update      bytea,
          PRIMARY KEY (room,doc,id)
      );
"""


def open_versions(storage: Storage) -> VersionStore | None:
    """The version store of a GCS, S3 or PostgreSQL storage; ``None`` for another one."""
    module = type(storage).__module__
    if module == "ysync.storage.gcs":
        return _gcs_versions(storage)
    if module == "ysync.storage.s3":
        return _s3_versions(storage)
    if module == "ysync.storage.postgres":
        return PostgresVersions(storage)
    return None


# --- GCS ------------------------------------------------------------------------------------


def _gcs_versions(storage: Any) -> VersionStore:
    from ysync.storage.gcs import object_prefix

    prefix = f"{storage.prefix}{VERSIONS_FOLDER}/"
    return ObjectVersions(storage,
                          lambda room, docid: object_prefix(prefix, room, docid))


# --- S3 -------------------------------------------------------------------------------------


def _s3_versions(storage: Any) -> VersionStore:
    from ysync.storage.names import object_folder

    prefix = f"{VERSIONS_FOLDER}/"
    return ObjectVersions(storage,
                          lambda room, docid: object_folder(prefix, room, docid))


# --- PostgreSQL -----------------------------------------------------------------------------


async def _create_table(conn: Any) -> None:
    from psycopg import errors as pg_errors

    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSIONS_TABLE,))
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    try:
        await conn.execute(_CREATE_TABLE)
    except (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateObject):
        return  # another process created it at the same moment


class PostgresVersions(VersionStore):
    """Versions as rows of ``ysync_versions_v1`` (created when first needed), on the storage's
    own connection."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._created = False

    async def _execute(self, what: str, statement: str, args: tuple[Any, ...]) -> list[Any]:
        async def run(conn: Any) -> list[Any]:
            if not self._created:
                await _create_table(conn)
                self._created = True
            cur = await conn.execute(statement, args)
            return list(await cur.fetchall()) if cur.description is not None else []

        rows: list[Any] = await self._storage._execute(what, run)
        return rows

    async def add(self, room: str, docid: str, version: Version, update_v2: bytes) -> None:
        await self._execute(
            f"writing version {version.id} of {room!r}/{docid!r}",
            f"INSERT INTO {VERSIONS_TABLE} (room,doc,id,time_ms,size,sv,update) "
            f"VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (room, docid, version.id, version.time_ms, version.size, version.state_vector,
             bytes(update_v2)))

    async def versions(self, room: str, docid: str) -> list[Version]:
        rows = await self._execute(
            f"listing the versions of {room!r}/{docid!r}",
            f"SELECT id, time_ms, size, sv FROM {VERSIONS_TABLE} WHERE room = %s AND doc = %s "
            f"ORDER BY id", (room, docid))
        return [Version(str(i), int(t), int(n), bytes(sv)) for i, t, n, sv in rows]

    async def ids(self, room: str, docid: str) -> list[str]:
        rows = await self._execute(
            f"listing the versions of {room!r}/{docid!r}",
            f"SELECT id FROM {VERSIONS_TABLE} WHERE room = %s AND doc = %s ORDER BY id",
            (room, docid))
        return [str(i) for (i,) in rows]

    async def read(self, room: str, docid: str, version_id: str) -> bytes | None:
        rows = await self._execute(
            f"reading version {version_id} of {room!r}/{docid!r}",
            f"SELECT update FROM {VERSIONS_TABLE} WHERE room = %s AND doc = %s AND id = %s",
            (room, docid, version_id))
        return bytes(rows[0][0]) if rows else None

    async def delete(self, room: str, docid: str, version_ids: Sequence[str]) -> None:
        if version_ids:
            await self._execute(
                f"deleting versions of {room!r}/{docid!r}",
                f"DELETE FROM {VERSIONS_TABLE} WHERE room = %s AND doc = %s AND id = ANY(%s)",
                (room, docid, list(version_ids)))


__all__ = ["VERSIONS_TABLE", "PostgresVersions", "open_versions"]
