"""What the object-store backends (GCS, S3) share: snapshots as objects of a bucket.

A document's snapshots are the objects in its folder (:meth:`ObjectStorage.snapshot_folder`,
y-redis's names), each a whole v2 update under a new UUID. Reading lists the folder and
downloads every object in parallel; an object deleted between the listing and the download (a
worker that persisted a newer snapshot containing it) makes the read list again. A backend
provides the four object operations of :class:`ObjectStore` (also what the document history
keeps its versions with, ysync/storage/versions.py), its ``_call`` (a blocking client call in a
thread under the storage timeout, errors as ``StorageError``), ``where`` (an object's address
for messages) and ``snapshot_folder``.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from ysync.errors import StorageError
from ysync.storage.base import Storage, StoredDoc, merge_snapshots

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Listings of one document tried while concurrent workers replace its snapshots.
READ_ATTEMPTS = 5
#: The content type of a snapshot object.
SNAPSHOT_TYPE = "application/octet-stream"


class ObjectStore(ABC):
    """Four object operations; every one may raise ``StorageError``."""

    @abstractmethod
    async def names(self, prefix: str) -> list[str]:
        """Every object name starting with ``prefix``, sorted."""

    @abstractmethod
    async def get(self, name: str) -> bytes | None:
        """An object's body, ``None`` if it does not exist."""

    @abstractmethod
    async def put(self, name: str, data: bytes, content_type: str = SNAPSHOT_TYPE) -> None:
        """Create the object ``name`` (a new name: never an overwrite)."""

    @abstractmethod
    async def remove(self, names: Sequence[str]) -> None:
        """Delete objects; missing ones are no error (a concurrent worker was first)."""


class ObjectStorage(Storage, ObjectStore):
    """The snapshot side of :class:`~ysync.storage.base.Storage` on an :class:`ObjectStore`."""

    #: how messages name the backend ("gcs storage")
    label = "object storage"
    #: what the backend's client raises when a call fails (then StorageError)
    errors: tuple[type[Exception], ...] = (OSError,)
    #: seconds for one call
    timeout: float
    #: how many blocking calls run at once (in threads)
    _limiter: anyio.CapacityLimiter

    async def _call(self, what: str, func: Callable[[], T]) -> T:
        """``func()`` in a thread under the call timeout; StorageError naming ``what``."""
        try:
            with anyio.fail_after(self.timeout):
                return await anyio.to_thread.run_sync(func, abandon_on_cancel=True,
                                                      limiter=self._limiter)
        except TimeoutError as exc:
            raise StorageError(f"{self.label}: {what} timed out after {self.timeout} s") from exc
        except self.errors as exc:
            raise StorageError(f"{self.label}: {what} failed: {exc}") from exc

    @abstractmethod
    def where(self, name: str = "") -> str:
        """The address of object ``name`` (or of the bucket) for messages."""

    @abstractmethod
    def snapshot_folder(self, room: str, docid: str) -> str:
        """The folder (a name prefix ending in ``/``) of a document's snapshots."""

    async def retrieve_doc(self, room: str, docid: str) -> StoredDoc | None:
        folder = self.snapshot_folder(room, docid)
        for _ in range(READ_ATTEMPTS):
            names = await self.names(folder)
            if not names:
                return None
            bodies = await self._download(names)
            if len(bodies) < len(names):
                # deleted after the listing by a worker that had persisted a newer snapshot
                # containing it: list again to find that one
                continue
            merged = await self._call(
                "merging snapshots", partial(merge_snapshots, [bodies[name] for name in names]))
            return StoredDoc(merged, tuple(names))
        raise StorageError(f"{self.label}: snapshots under {self.where(folder)} kept vanishing "
                           f"while being read ({READ_ATTEMPTS} attempts)")

    async def _download(self, names: Sequence[str]) -> dict[str, bytes]:
        """The bodies of ``names`` (those that still exist), downloaded in parallel (as many at
        once as the backend's ``_call`` admits)."""
        found: dict[str, bytes] = {}
        errors: list[StorageError] = []

        async def download(name: str) -> None:
            try:
                body = await self.get(name)
            except StorageError as exc:
                errors.append(exc)
                return
            if body is not None:
                found[name] = body

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(download, name)
        if errors:
            raise errors[0]
        return found

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        name = f"{self.snapshot_folder(room, docid)}{uuid.uuid4()}"
        data = bytes(update_v2)
        await self.put(name, data)
        log.debug("persisted %s (%d bytes)", self.where(name), len(data))

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        folder = self.snapshot_folder(room, docid)
        names = sorted({r for r in references
                        if r.startswith(folder) and "/" not in r[len(folder):]})
        for ignored in set(references) - set(names):
            log.warning("ignoring reference %r: not a snapshot of %r/%r", ignored, room, docid)
        if names:
            await self.remove(names)
