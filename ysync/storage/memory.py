"""Snapshots kept in this process's memory: for tests and throw-away deployments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ysync.storage.base import Storage, StoredDoc, merge_snapshots


class MemoryStorage(Storage):
    """Keeps every snapshot in a dict; nothing survives the process."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], dict[str, bytes]] = {}

    async def retrieve_doc(self, room: str, docid: str) -> StoredDoc | None:
        snapshots = self._docs.get((room, docid))
        if not snapshots:
            return None
        references = tuple(snapshots)
        return StoredDoc(merge_snapshots([snapshots[r] for r in references]), references)

    async def persist_doc(self, room: str, docid: str, update_v2: bytes) -> None:
        self._docs.setdefault((room, docid), {})[str(uuid.uuid4())] = bytes(update_v2)

    async def check(self) -> None:
        """Memory always answers."""

    async def delete_references(self, room: str, docid: str, references: Sequence[str]) -> None:
        snapshots = self._docs.get((room, docid))
        if snapshots is None:
            return
        for reference in references:
            snapshots.pop(reference, None)
        if not snapshots:
            del self._docs[(room, docid)]
