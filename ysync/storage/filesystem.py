"""Snapshots as files under a root folder, named like y-redis's S3 objects (docs/protocol.md).

A snapshot of (room, docid) is the file ``<root>/<encodeURIComponent(room)>/
<encodeURIComponent(docid)>/<uuid v4>`` holding a v2 update; its reference is the relative name
``<encodeURIComponent(room)>/<encodeURIComponent(docid)>/<uuid v4>``, exactly the object name the
S3 store would use, so a folder can be copied into a bucket as it is.

Writes are atomic: a hidden temporary file in the same folder is written, fsynced, renamed to its
final name and the folder fsynced, so a crash leaves either the whole snapshot or none (plus at
worst a temporary file, which readers ignore). Only names that are a UUID count as snapshots.
A snapshot that vanishes between listing and reading was deleted by a worker that had already
persisted a newer one containing it, so the folder is listed again.

Two names cannot be folders: ``.`` and ``..`` (encodeURIComponent keeps dots) are written
``%2E`` and ``%2E%2E``, which decode to the same room. The empty name is written ``%``, which no
encodeURIComponent output can be. File systems limit a name to 255 bytes: an encoded room or
doc id longer than that (a room of 256 bytes, or of 85 ``%25`` escapes, as the upgrade accepts)
is shortened to its first bytes, ``%~`` and a SHA-256 (:mod:`ysync.storage.names`), so every
room can be stored. Those few folders do not have y-redis's S3 names (y-redis cannot hold such
a room in S3 either).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from ysync.errors import StorageError
from ysync.storage.base import Storage, StoredDoc, merge_snapshots
from ysync.storage.names import fit_part
from ysync.streams import encode_uri_component

log = logging.getLogger(__name__)

_SNAPSHOT_NAME = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 3600
#: Listings of one document tried while concurrent workers replace its snapshots.
_READ_ATTEMPTS = 5
_SPECIAL_NAMES = {"": "%", ".": "%2E", "..": "%2E%2E"}

T = TypeVar("T")


def folder_name(value: str) -> str:
    """``encodeURIComponent(value)``, made safe as one folder name (see the module docstring)."""
    encoded = encode_uri_component(value)
    return fit_part(_SPECIAL_NAMES.get(encoded, encoded))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temp_files(folder: Path) -> None:
    """Remove temporary files that a crashed writer left behind (older than an hour)."""
    horizon = time.time() - _STALE_TEMP_SECONDS
    for entry in os.scandir(folder):
        if entry.name.startswith(_TEMP_PREFIX):
            try:
                if entry.stat().st_mtime < horizon:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue


async def run_in_thread(label: str, seconds: float, what: str, func: Callable[[], T]) -> T:
    """``func()`` (blocking file I/O) in a thread within ``seconds``; a timeout or an
    OSError becomes StorageError naming ``label`` and ``what``."""
    try:
        with anyio.fail_after(seconds):
            return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)
    except TimeoutError as exc:
        raise StorageError(f"{label}: {what} timed out after {seconds} s") from exc
    except OSError as exc:
        raise StorageError(f"{label}: {what} failed: {exc}") from exc


class FilesystemStorage(Storage):
    """Snapshots as files under ``root`` (created if missing). Blocking I/O runs in threads."""

    def __init__(self, root: str | Path, *, timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.timeout = timeout

    def _doc_dir(self, room: str, docid: str) -> Path:
        return self.root / folder_name(room) / folder_name(docid)

    def _reference(self, room: str, docid: str, name: str) -> str:
        return f"{folder_name(room)}/{folder_name(docid)}/{name}"

    async def _run(self, what: str, func: Callable[[], T]) -> T:
        return await run_in_thread("filesystem storage", self.timeout, what, func)

    async def check(self) -> None:
        def probe() -> None:
            if not self.root.is_dir():
                raise StorageError(f"filesystem storage: {self.root} is not a directory")
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageError(f"filesystem storage: {self.root} is not writable")

        await self._run(f"checking {self.root}", probe)

    async def retrieve_doc(self, room: str, docid: str) -> StoredDoc | None:
        folder = self._doc_dir(room, docid)

        def read() -> StoredDoc | None:
            for _ in range(_READ_ATTEMPTS):
                try:
                    names = sorted(n for n in os.listdir(folder) if _SNAPSHOT_NAME.match(n))
                except FileNotFoundError:
                    return None
                try:
                    updates = [(folder / name).read_bytes() for name in names]
                except FileNotFoundError:
                    # deleted after the listing by a worker that had persisted a newer snapshot
                    # containing it: list again to find that one
                    continue
                if not updates:
                    return None
                references = tuple(self._reference(room, docid, name) for name in names)
                return StoredDoc(merge_snapshots(updates), references)
            raise StorageError(f"filesystem storage: snapshots in {folder} kept vanishing "
                               f"while being read ({_READ_ATTEMPTS} attempts)")

        return await self._run(f"reading {folder}", read)

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        folder = self._doc_dir(room, docid)
        name = str(uuid.uuid4())
        data = bytes(update_v2)

        def write() -> None:
            self._make_dirs(folder)
            temp = folder / f"{_TEMP_PREFIX}{name}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temp, folder / name)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_dir(folder)
            _remove_stale_temp_files(folder)

        await self._run(f"writing a snapshot to {folder}", write)
        log.debug("persisted %s (%d bytes)", self._reference(room, docid, name), len(data))

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its parents, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        path = folder
        while not path.is_dir():
            missing.append(path)
            if path.parent == path:
                break
            path = path.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    raise StorageError(f"filesystem storage: name too long: {path.name!r}") \
                        from exc
                raise
            _fsync_dir(path.parent)

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        folder = self._doc_dir(room, docid)
        own_prefix = self._reference(room, docid, "")
        names = []
        for reference in references:
            name = reference[len(own_prefix):]
            if reference.startswith(own_prefix) and _SNAPSHOT_NAME.match(name):
                names.append(name)
            else:
                log.warning("ignoring reference %r: not a snapshot of %r/%r", reference, room,
                            docid)
        if not names:
            return

        def delete() -> None:
            for name in names:
                (folder / name).unlink(missing_ok=True)
            _fsync_dir(folder)

        try:
            await self._run(f"deleting snapshots in {folder}", delete)
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return  # the folder is gone: nothing left to delete
            raise
