"""Version stores of the GCS, S3 and PostgreSQL storages (layout: :mod:`ysync.storage.versions`).

Imported only when such a storage is used: their client libraries are optional. Each store uses
its storage's own client, connection, timeout and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ysync.storage.base import Storage
from ysync.storage.versions import (
    VERSIONS_FOLDER,
    ObjectStore,
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
    return ObjectVersions(_GcsObjects(storage),
                          lambda room, docid: object_prefix(prefix, room, docid))


class _GcsObjects(ObjectStore):
    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def names(self, prefix: str) -> list[str]:
        s = self._storage

        def list_names() -> list[str]:
            blobs: Any = s._client.list_blobs(s._bucket, prefix=prefix, timeout=s.timeout,
                                              retry=s._retry)
            return sorted(str(blob.name) for blob in blobs)

        names: list[str] = await s._call(f"listing gs://{s.bucket_name}/{prefix}", list_names)
        return names

    async def get(self, name: str) -> bytes | None:
        from google.api_core import exceptions as gexc

        s = self._storage

        def download() -> bytes | None:
            try:
                body: bytes = s._bucket.blob(name).download_as_bytes(timeout=s.timeout,
                                                                     retry=s._retry)
                return body
            except gexc.NotFound:
                return None

        body: bytes | None = await s._call(f"reading gs://{s.bucket_name}/{name}", download)
        return body

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        s = self._storage

        def upload() -> None:
            # create only: a retried upload of this new name never overwrites anything
            s._bucket.blob(name).upload_from_string(
                data, content_type=content_type, if_generation_match=0, timeout=s.timeout,
                retry=s._retry)

        await s._call(f"writing gs://{s.bucket_name}/{name}", upload)

    async def remove(self, names: Sequence[str]) -> None:
        from google.api_core import exceptions as gexc

        s = self._storage
        for name in names:
            def delete(name: str = name) -> None:
                try:
                    s._bucket.blob(name).delete(timeout=s.timeout, retry=s._retry)
                except gexc.NotFound:
                    pass  # deleted already: the goal is reached

            await s._call(f"deleting gs://{s.bucket_name}/{name}", delete)


# --- S3 -------------------------------------------------------------------------------------


def _s3_versions(storage: Any) -> VersionStore:
    from ysync.storage.names import object_folder

    prefix = f"{VERSIONS_FOLDER}/"
    return ObjectVersions(_S3Objects(storage),
                          lambda room, docid: object_folder(prefix, room, docid))


class _S3Objects(ObjectStore):
    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def names(self, prefix: str) -> list[str]:
        s = self._storage

        def list_names() -> list[str]:
            pages = s._client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket,
                                                                        Prefix=prefix)
            return sorted(str(item["Key"]) for page in pages for item in page.get("Contents", ()))

        names: list[str] = await s._call(f"listing s3://{s.bucket}/{prefix}", list_names)
        return names

    async def get(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        s = self._storage

        def download() -> bytes | None:
            try:
                response = s._client.get_object(Bucket=s.bucket, Key=name)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
                    return None
                raise
            with response["Body"] as body:
                return bytes(body.read())

        body: bytes | None = await s._call(f"reading s3://{s.bucket}/{name}", download)
        return body

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        s = self._storage

        def upload() -> None:
            s._client.put_object(Bucket=s.bucket, Key=name, Body=data, ContentType=content_type)

        await s._call(f"writing s3://{s.bucket}/{name}", upload)

    async def remove(self, names: Sequence[str]) -> None:
        s = self._storage

        def delete() -> None:
            s._client.delete_objects(Bucket=s.bucket, Delete={
                "Objects": [{"Key": name} for name in names], "Quiet": True})

        for start in range(0, len(names), 1000):  # S3 takes 1000 keys per request
            batch = names[start:start + 1000]
            if batch:
                await s._call(f"deleting {len(batch)} versions in s3://{s.bucket}", delete)


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
