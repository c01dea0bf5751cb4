"""Versions of documents, recorded by the worker (``history.enabled``; docs/api.md, "History").

After each compaction that changed a document, the worker stores the snapshot it persisted as a
version (:mod:`ysync.storage.versions`) and thins the document's versions by the retention
policy (:func:`versions_to_drop`): every version younger than ``history.keep_all``, then the
last version of each hour up to ``history.keep_hourly``, then the last of each day (UTC) up to
``history.keep_daily``; older versions are deleted. Keeping the *last* version of an hour means
the hourly versions are the document as it was at the end of each hour.

A version that cannot be recorded is logged and counted, never a failed compaction: the
document itself is persisted, and only that point of its history is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.to_thread

from ysync.config import Config, HistoryConfig
from ysync.errors import StorageError, UpdateFormatError
from ysync.storage.base import Storage
from ysync.storage.versions import Version, new_version_id, version_time, versions_of
from ysync.updates import state_vector_from_v2

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long versions are kept, in seconds (see the module docstring)."""

    keep_all: float = 3600.0
    keep_hourly: float = 86400.0
    keep_daily: float = 30 * 86400.0

    @classmethod
    def of(cls, history: HistoryConfig) -> Retention:
        return cls(history.keep_all, history.keep_hourly, history.keep_daily)


def versions_to_drop(versions: Sequence[tuple[str, int]], now_ms: int,
                     retention: Retention) -> list[str]:
    """The ids of the versions ``(id, time_ms)`` that ``retention`` no longer keeps at
    ``now_ms``. Pure: the same versions and time give the same answer."""
    drop: list[str] = []
    taken: set[tuple[str, int]] = set()
    for version_id, time_ms in sorted(versions, key=lambda v: (v[1], v[0]), reverse=True):
        age = now_ms - time_ms
        if age <= retention.keep_all * 1000:
            continue
        if age <= retention.keep_hourly * 1000:
            bucket = ("hour", time_ms // _HOUR_MS)
        elif age <= retention.keep_daily * 1000:
            bucket = ("day", time_ms // _DAY_MS)
        else:
            drop.append(version_id)
            continue
        if bucket in taken:
            drop.append(version_id)  # a later version of the same hour (or day) is kept
        else:
            taken.add(bucket)
    return drop


async def record_version(storage: Storage, config: Config, room: str, docid: str,
                         snapshot_v2: bytes, *, now_ms: int | None = None) -> Version | None:
    """Store ``snapshot_v2`` (just persisted) as a version of (room, docid) and drop the
    versions the retention policy no longer keeps. Never raises for a storage failure: it is
    logged, and ``None`` is returned."""
    when = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        with anyio.fail_after(config.storage.timeout * 2):
            state_vector = await anyio.to_thread.run_sync(state_vector_from_v2, snapshot_v2)
            version = Version(new_version_id(when), when, len(snapshot_v2), state_vector)
            store = versions_of(storage)
            await store.add(room, docid, version, snapshot_v2)
            existing = await store.ids(room, docid)  # names only: an id holds its time
            drop = versions_to_drop([(v, version_time(v)) for v in existing], when,
                                    Retention.of(config.history))
            if drop:
                await store.delete(room, docid, drop)
    except (StorageError, UpdateFormatError, TimeoutError) as exc:
        log.warning("room %r doc %r: the version of this compaction was not recorded (the "
                    "document is persisted; only this point of its history is missing): %s",
                    room, docid, exc or "timed out")
        return None
    log.debug("room %r doc %r: recorded version %s (%d bytes), dropped %d", room, docid,
              version.id, version.size, len(drop))
    return version


__all__ = ["Retention", "record_version", "versions_to_drop"]
