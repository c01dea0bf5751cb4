"""Versions of documents, kept beside the snapshots in every storage (docs/api.md, "History").

A *version* is a document as one compaction persisted it (the whole v2 snapshot), with its time,
size and state vector, recorded by the worker when ``history.enabled`` is set
(:mod:`workers.history`) and read by the document API. It lives in the same storage as the
snapshots, in a layout that neither y-redis nor ysync's own :meth:`Storage.retrieve_doc` ever
reads, so both keep working on the storage unchanged:

* filesystem, GCS and S3: under the top-level folder ``%ysync-versions/`` (after the GCS
  prefix): ``%ysync-versions/<encodeURIComponent(room)>/<encodeURIComponent(docid)>/<id>.v2``
  (the snapshot) and ``<id>.json`` (the record, written last: a version exists once it is
  there). Snapshot readers list ``<encoded room>/<encoded docid>/``, which no name under
  ``%ysync-versions/`` starts with (``encodeURIComponent`` writes ``%`` only before two hex
  digits);
* PostgreSQL: the table ``ysync_versions_v1`` (y-redis reads only ``yredis_docs_v1``);
* memory: a dict beside the storage's own.

A version id is ``<time in ms, 13 digits>-<8 hex digits>``: ids sort by time, and are safe in
file and object names. :func:`versions_of` gives the :class:`VersionStore` of a storage.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ysync.errors import StorageError
from ysync.storage.base import Storage
from ysync.storage.filesystem import FilesystemStorage, folder_name, run_in_thread
from ysync.storage.memory import MemoryStorage
from ysync.storage.objects import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The top-level folder of versions in the filesystem, GCS and S3 storages.
VERSIONS_FOLDER = "%ysync-versions"
VERSION_ID = re.compile(r"^[0-9]{13}-[0-9a-f]{8}$")
_RECORD = ".json"
_SNAPSHOT = ".v2"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class Version:
    """One recorded version: ``id``, ``time_ms`` (ms since the epoch, when it was recorded),
    ``size`` (bytes of its v2 snapshot), ``state_vector`` (v1 encoding)."""

    id: str
    time_ms: int
    size: int
    state_vector: bytes

    def to_json(self) -> dict[str, Any]:
        """The version as the API lists it (the state vector base64url, unpadded)."""
        when = datetime.fromtimestamp(self.time_ms / 1000, UTC)
        return {"id": self.id, "time": when.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"), "time_ms": self.time_ms, "size": self.size,
            "state_vector": base64.urlsafe_b64encode(self.state_vector).decode().rstrip("=")}

    def record(self) -> bytes:
        """The stored record (JSON)."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, data: bytes) -> Version:
        try:
            value = json.loads(data)
            encoded = value["state_vector"]
            state_vector = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            version = cls(str(value["id"]), int(value["time_ms"]), int(value["size"]),
                          state_vector)
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"a version record does not decode: {exc}") from exc
        if not VERSION_ID.match(version.id):
            raise StorageError(f"a version record has a malformed id {version.id!r}")
        return version


def new_version_id(time_ms: int) -> str:
    """A fresh id for a version recorded at ``time_ms``."""
    return f"{time_ms:013d}-{secrets.token_hex(4)}"


def version_time(version_id: str) -> int:
    """The time (ms) a version id was made for."""
    return int(version_id.partition("-")[0])


class VersionStore(ABC):
    """The versions of documents in one storage. Every method may raise ``StorageError``."""

    @abstractmethod
    async def add(self, room: str, docid: str, version: Version, update_v2: bytes) -> None:
        """Store ``update_v2`` (the whole document) as ``version``."""

    @abstractmethod
    async def versions(self, room: str, docid: str) -> list[Version]:
        """Every version of (room, docid), oldest first."""

    async def ids(self, room: str, docid: str) -> list[str]:
        """The ids of the versions of (room, docid), oldest first (cheaper than :meth:`versions`:
        an id holds its version's time, :func:`version_time`)."""
        return [version.id for version in await self.versions(room, docid)]

    @abstractmethod
    async def read(self, room: str, docid: str, version_id: str) -> bytes | None:
        """The v2 snapshot of a version, or ``None`` if there is no such version."""

    @abstractmethod
    async def delete(self, room: str, docid: str, version_ids: Sequence[str]) -> None:
        """Delete versions; unknown ids are ignored."""


class MemoryVersions(VersionStore):
    """Versions in a dict (beside :class:`MemoryStorage`); lost with the process."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], dict[str, tuple[Version, bytes]]] = {}

    async def add(self, room: str, docid: str, version: Version, update_v2: bytes) -> None:
        self._docs.setdefault((room, docid), {})[version.id] = (version, bytes(update_v2))

    async def versions(self, room: str, docid: str) -> list[Version]:
        found = self._docs.get((room, docid), {})
        return [found[key][0] for key in sorted(found)]

    async def read(self, room: str, docid: str, version_id: str) -> bytes | None:
        found = self._docs.get((room, docid), {}).get(version_id)
        return None if found is None else found[1]

    async def delete(self, room: str, docid: str, version_ids: Sequence[str]) -> None:
        found = self._docs.get((room, docid), {})
        for version_id in version_ids:
            found.pop(version_id, None)


class FilesystemVersions(VersionStore):
    """Versions as files under ``<root>/%ysync-versions/`` (module docstring), written
    atomically like snapshots (a temporary file, fsynced, renamed)."""

    def __init__(self, root: Path, *, timeout: float = 30.0) -> None:
        self.root = root / VERSIONS_FOLDER
        self.timeout = timeout

    def _folder(self, room: str, docid: str) -> Path:
        return self.root / folder_name(room) / folder_name(docid)

    async def _run(self, what: str, func: Callable[[], T]) -> T:
        return await run_in_thread("filesystem versions", self.timeout, what, func)

    async def add(self, room: str, docid: str, version: Version, update_v2: bytes) -> None:
        folder = self._folder(room, docid)
        data = bytes(update_v2)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(folder, version.id + _SNAPSHOT, data)
            _write_atomically(folder, version.id + _RECORD, version.record())

        await self._run(f"writing version {version.id} to {folder}", write)

    async def versions(self, room: str, docid: str) -> list[Version]:
        folder = self._folder(room, docid)

        def read_all() -> list[Version]:
            try:
                names = sorted(n for n in os.listdir(folder) if n.endswith(_RECORD)
                               and VERSION_ID.match(n[:-len(_RECORD)]))
            except FileNotFoundError:
                return []
            versions = []
            for name in names:
                try:
                    versions.append(Version.from_record((folder / name).read_bytes()))
                except FileNotFoundError:
                    continue  # deleted meanwhile by the retention policy
            return versions

        return await self._run(f"listing the versions in {folder}", read_all)

    async def ids(self, room: str, docid: str) -> list[str]:
        folder = self._folder(room, docid)

        def names() -> list[str]:
            try:
                return sorted(n[:-len(_RECORD)] for n in os.listdir(folder)
                              if n.endswith(_RECORD) and VERSION_ID.match(n[:-len(_RECORD)]))
            except FileNotFoundError:
                return []

        return await self._run(f"listing the versions in {folder}", names)

    async def read(self, room: str, docid: str, version_id: str) -> bytes | None:
        if not VERSION_ID.match(version_id):
            return None
        folder = self._folder(room, docid)

        def read_one() -> bytes | None:
            if not (folder / (version_id + _RECORD)).exists():
                return None
            try:
                return (folder / (version_id + _SNAPSHOT)).read_bytes()
            except FileNotFoundError:
                return None

        return await self._run(f"reading version {version_id} in {folder}", read_one)

    async def delete(self, room: str, docid: str, version_ids: Sequence[str]) -> None:
        folder = self._folder(room, docid)
        ids = [v for v in version_ids if VERSION_ID.match(v)]

        def remove() -> None:
            for version_id in ids:  # the record first: a version is gone once it is
                (folder / (version_id + _RECORD)).unlink(missing_ok=True)
                (folder / (version_id + _SNAPSHOT)).unlink(missing_ok=True)

        if ids:
            await self._run(f"deleting versions in {folder}", remove)


def _write_atomically(folder: Path, name: str, data: bytes) -> None:
    temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4()}"
    try:
        with open(temp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(temp, folder / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectVersions(VersionStore):
    """Versions as objects ``<prefix>%ysync-versions/<room>/<docid>/<id>.v2|.json``."""

    def __init__(self, objects: ObjectStore, folder: Callable[[str, str], str]) -> None:
        self._objects = objects
        self._folder = folder  # (room, docid) -> "<prefix>%ysync-versions/<room>/<doc>/"

    async def add(self, room: str, docid: str, version: Version, update_v2: bytes) -> None:
        folder = self._folder(room, docid)
        await self._objects.put(folder + version.id + _SNAPSHOT, bytes(update_v2),
                                "application/octet-stream")
        await self._objects.put(folder + version.id + _RECORD, version.record(),
                                "application/json")

    async def ids(self, room: str, docid: str) -> list[str]:
        folder = self._folder(room, docid)
        return sorted(n[len(folder):-len(_RECORD)] for n in await self._objects.names(folder)
                      if n.endswith(_RECORD) and VERSION_ID.match(n[len(folder):-len(_RECORD)]))

    async def versions(self, room: str, docid: str) -> list[Version]:
        folder = self._folder(room, docid)
        ids = await self.ids(room, docid)
        records: dict[str, bytes] = {}

        async def fetch(version_id: str) -> None:
            data = await self._objects.get(folder + version_id + _RECORD)
            if data is not None:  # else deleted meanwhile by the retention policy
                records[version_id] = data

        async with anyio.create_task_group() as tg:  # the storage bounds its parallel calls
            for version_id in ids:
                tg.start_soon(fetch, version_id)
        return [Version.from_record(records[v]) for v in ids if v in records]

    async def read(self, room: str, docid: str, version_id: str) -> bytes | None:
        if not VERSION_ID.match(version_id):
            return None
        folder = self._folder(room, docid)
        if await self._objects.get(folder + version_id + _RECORD) is None:
            return None
        return await self._objects.get(folder + version_id + _SNAPSHOT)

    async def delete(self, room: str, docid: str, version_ids: Sequence[str]) -> None:
        folder = self._folder(room, docid)
        ids = [v for v in version_ids if VERSION_ID.match(v)]
        if ids:
            await self._objects.remove([folder + v + _RECORD for v in ids])
            await self._objects.remove([folder + v + _SNAPSHOT for v in ids])


_STORES: weakref.WeakKeyDictionary[Storage, VersionStore] = weakref.WeakKeyDictionary()


def versions_of(storage: Storage) -> VersionStore:
    """The version store beside ``storage`` (one per storage object: the in-process worker and
    the server share it). ``StorageError`` for a storage that keeps no versions."""
    store = _STORES.get(storage)
    if store is None:
        store = _STORES[storage] = _open_versions(storage)
    return store


def _open_versions(storage: Storage) -> VersionStore:
    if isinstance(storage, MemoryStorage):
        return MemoryVersions()
    if isinstance(storage, FilesystemStorage):
        return FilesystemVersions(storage.root, timeout=storage.timeout)
    from ysync.storage import versions_backends

    store = versions_backends.open_versions(storage)
    if store is None:
        raise StorageError(f"{type(storage).__name__} keeps no versions")
    return store


__all__ = ["VERSIONS_FOLDER", "VERSION_ID", "FilesystemVersions", "MemoryVersions",
           "ObjectVersions", "Version", "VersionStore", "new_version_id",
           "version_time", "versions_of"]
