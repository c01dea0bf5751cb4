"""Snapshots as Google Cloud Storage objects, named like y-redis's S3 objects (docs/protocol.md).

A snapshot of (room, docid) is the object ``<prefix><encodeURIComponent(room)>/
<encodeURIComponent(docid)>/<uuid v4>`` whose body is a v2 update; the reference is the whole
object name. ``prefix`` is optional; a non-empty one is used as a folder (a ``/`` is added if it
lacks one). GCS limits an object name to 1024 bytes: when a snapshot's name would be longer (a
long room, up to three times longer once encoded), its room and doc id parts are shortened as the
filesystem storage shortens them (:mod:`ysync.storage.names`), and a prefix longer than
:data:`MAX_PREFIX_BYTES` is refused, so that every room fits.

Credentials come from the standard application-default chain (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server). When ``STORAGE_EMULATOR_HOST``
is set the client talks to that emulator without credentials. The google-cloud-storage client
blocks, so every call runs in a worker thread under a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage as gcs  # type: ignore[import-untyped]
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

from ysync.errors import StorageError
from ysync.storage.names import (
    MAX_OBJECT_NAME_BYTES,
    MAX_PART_BYTES,
    SNAPSHOT_NAME_BYTES,
    object_folder,
)
from ysync.storage.objects import SNAPSHOT_TYPE, ObjectStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

# requests' errors (the HTTP layer) derive from OSError
_ERRORS = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, OSError, ValueError)
#: Parallel downloads of one document's snapshots.
_DOWNLOADS = 8


__all__ = ["MAX_OBJECT_NAME_BYTES", "MAX_PREFIX_BYTES", "GcsStorage", "object_prefix"]

#: Longest prefix that leaves room for every room and doc id (each at most 255 bytes, shortened).
MAX_PREFIX_BYTES = MAX_OBJECT_NAME_BYTES - 2 * (MAX_PART_BYTES + 1) - SNAPSHOT_NAME_BYTES


def object_prefix(prefix: str, room: str, docid: str) -> str:
    """``<prefix><encodeURIComponent(room)>/<encodeURIComponent(docid)>/``, with both parts
    shortened if a snapshot's name would be longer than GCS allows (module docstring)."""
    return object_folder(prefix, room, docid)


def _folder_prefix(prefix: str) -> str:
    """``prefix`` as a folder (ending in ``/``); StorageError if it leaves too little room."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    size = len(prefix.encode("utf-8"))
    if size > MAX_PREFIX_BYTES:
        raise StorageError(f"gcs storage: the object prefix is {size} bytes; at most "
                           f"{MAX_PREFIX_BYTES} leave room for every room name within GCS's "
                           f"{MAX_OBJECT_NAME_BYTES}-byte object names")
    return prefix


class GcsStorage(ObjectStorage):
    """Snapshots in a GCS bucket. Create it with :meth:`open`."""

    label = "gcs storage"
    errors = _ERRORS

    def __init__(self, client: gcs.Client, bucket: str, prefix: str = "", *,
                 timeout: float = 30.0) -> None:
        prefix = _folder_prefix(prefix)
        self._client = client
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.prefix = prefix
        self.timeout = timeout
        # the client's own retries stop within our timeout, so no abandoned thread lingers
        self._retry = DEFAULT_RETRY.with_timeout(timeout)
        self._limiter = anyio.CapacityLimiter(_DOWNLOADS)

    @classmethod
    async def open(cls, bucket: str, prefix: str = "", *,
                   call_timeout: float = 30.0) -> GcsStorage:
        """Create the client (application-default credentials) and check the bucket exists.

        ``call_timeout``: seconds for one storage call, kept for the storage's lifetime.
        """
        timeout = call_timeout
        _folder_prefix(prefix)  # refused before a client is made
        try:
            with anyio.fail_after(timeout):
                client = await anyio.to_thread.run_sync(
                    lambda: gcs.Client(project=None), abandon_on_cancel=True)
        except TimeoutError as exc:
            raise StorageError(f"gcs storage: creating the client timed out after {timeout} s") \
                from exc
        except _ERRORS as exc:
            raise StorageError(f"gcs storage: cannot create a client: {exc}") from exc
        store = cls(client, bucket, prefix, timeout=timeout)
        try:
            exists = await store._call(f"checking bucket {bucket}", lambda: store._bucket.exists(
                timeout=timeout, retry=store._retry))
        except StorageError:
            await store.aclose()
            raise
        if not exists:
            await store.aclose()
            raise StorageError(f"gcs storage: bucket {bucket!r} does not exist")
        return store

    def where(self, name: str = "") -> str:
        return f"gs://{self.bucket_name}/{name}"

    def snapshot_folder(self, room: str, docid: str) -> str:
        return object_prefix(self.prefix, room, docid)

    async def check(self) -> None:
        def list_one() -> None:
            # a listing, not a bucket read: it needs only the permission the storage needs
            blobs: Any = self._client.list_blobs(self._bucket, prefix=self.prefix or None,
                                                 max_results=1, timeout=self.timeout,
                                                 retry=self._retry)
            for _blob in blobs:
                break

        await self._call(f"listing gs://{self.bucket_name}/{self.prefix}", list_one)

    async def names(self, prefix: str) -> list[str]:
        def list_names() -> list[str]:
            blobs: Any = self._client.list_blobs(self._bucket, prefix=prefix,
                                                 timeout=self.timeout, retry=self._retry)
            return sorted(str(blob.name) for blob in blobs)

        return await self._call(f"listing {self.where(prefix)}", list_names)

    async def get(self, name: str) -> bytes | None:
        def download() -> bytes | None:
            try:
                body: bytes = self._bucket.blob(name).download_as_bytes(
                    timeout=self.timeout, retry=self._retry)
                return body
            except gexc.NotFound:
                return None

        return await self._call(f"reading {self.where(name)}", download)

    async def put(self, name: str, data: bytes, content_type: str = SNAPSHOT_TYPE) -> None:
        def upload() -> None:
            # if_generation_match=0: create only; makes the upload safe for the client to retry
            self._bucket.blob(name).upload_from_string(
                data, content_type=content_type, if_generation_match=0,
                timeout=self.timeout, retry=self._retry)

        await self._call(f"writing {self.where(name)}", upload)

    async def remove(self, names: Sequence[str]) -> None:
        errors: list[StorageError] = []

        async def delete(name: str) -> None:
            def remove() -> None:
                try:
                    self._bucket.blob(name).delete(timeout=self.timeout, retry=self._retry)
                except gexc.NotFound:
                    pass  # already deleted by a concurrent worker: the goal is reached

            try:
                await self._call(f"deleting {self.where(name)}", remove)
            except StorageError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(delete, name)
        if errors:
            raise errors[0]

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)
