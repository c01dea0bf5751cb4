"""The storage contract shared by every backend (y-redis ``src/storage.js``).

A document (room, doc id) is stored as one or more *snapshots*: Yjs **v2** updates, each under a
*reference* (an object name, a file name, a row id). Reading returns all snapshots merged plus the
references that were merged, so that the worker can delete exactly those once a newer snapshot
that contains them is persisted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """The merged snapshots of one document.

    ``update_v2`` is a Yjs v2 update of everything stored; ``references`` names every snapshot
    that went into it.
    """

    update_v2: bytes
    references: tuple[str, ...]


class Storage(ABC):
    """A place where snapshots of documents live. Every method may raise ``StorageError``."""

    @abstractmethod
    async def retrieve_doc(self, room: str, docid: str) -> StoredDoc | None:
        """All snapshots of (room, docid) merged, or ``None`` if nothing is stored."""

    @abstractmethod
    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        """Store ``update_v2`` (the whole document, v2 encoding) as a new snapshot."""

    @abstractmethod
    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        """Delete the snapshots named by ``references``; unknown references are ignored."""

    async def retrieve_state_vector(self, room: str, docid: str) -> bytes | None:
        """The state vector (v1 encoding) of what is stored, or ``None`` if nothing is stored."""
        from ysync.updates import state_vector_from_v2

        stored = await self.retrieve_doc(room, docid)
        return None if stored is None else state_vector_from_v2(stored.update_v2)

    @abstractmethod
    async def check(self) -> None:
        """One cheap round trip to the backend (for ``/readyz``); raises ``StorageError`` when
        it does not answer, within the backend's call timeout."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections held by the backend."""


def merge_snapshots(updates: Sequence[bytes]) -> bytes:
    """Merge v2 snapshots into one v2 update (one snapshot is returned as it is)."""
    if len(updates) == 1:
        return updates[0]
    from ysync.updates import merge_v2

    return bytes(merge_v2(updates))
