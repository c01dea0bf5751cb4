"""Loading a document as y-redis does (spec section 4 step 2): snapshot + every stream message.

Used by the server for joining clients and by the worker for compaction. The CPU-heavy part
(:func:`build_doc`) is a pure function run in a worker thread so that a large document does not
stall the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import pycrdt
import redis.asyncio as aioredis

from ysync.errors import UpdateFormatError
from ysync.protocol import AwarenessEntry, is_valid_update, split_stream_messages
from ysync.storage.base import Storage
from ysync.streams import StreamId, read_whole_stream, room_stream_key

log = logging.getLogger(__name__)


class DocState(Protocol):
    """What joins and compaction need of a document: pycrdt's ``Doc`` or a :class:`CodecDoc`."""

    def get_state(self) -> bytes: ...

    def get_update(self, state: bytes | None = None) -> bytes: ...


class CodecDoc:
    """A document held as one merged v2 update and read with ysync's own codec.

    For the few constructs Yjs writes and pycrdt cannot read (a lone surrogate escaped in
    formatting JSON, some XML hooks): slower than pycrdt, but every Yjs update works.
    """

    def __init__(self, update_v2: bytes) -> None:
        self.update_v2 = update_v2

    def get_state(self) -> bytes:
        from ysync.updates import state_vector_from_v2

        return state_vector_from_v2(self.update_v2)

    def get_update(self, state: bytes | None = None) -> bytes:
        from ysync.updates import diff_v1, v2_to_v1

        full = v2_to_v1(self.update_v2)
        return full if state is None else diff_v1(full, state)


class PycrdtCannotRead(UpdateFormatError):
    """A valid Yjs update that pycrdt cannot read: the document is built with the codec."""


@dataclass(slots=True)
class LoadedDoc:
    """A document as loaded from storage and its stream.

    ``last_id`` is the id of the last stream entry read (``0-0`` for none); ``references`` the
    snapshots merged; ``changed`` whether the stream added anything the snapshots lacked.
    """

    doc: DocState
    awareness: dict[int, AwarenessEntry]
    last_id: StreamId
    references: tuple[str, ...]
    changed: bool
    skipped: int = 0
    _full_update: bytes | None = field(default=None, repr=False)
    _state_vector: bytes | None = field(default=None, repr=False)

    @property
    def state_vector(self) -> bytes:
        if self._state_vector is None:
            self._state_vector = bytes(self.doc.get_state())
        return self._state_vector

    @property
    def full_update(self) -> bytes:
        """The whole document as one v1 update (computed once)."""
        if self._full_update is None:
            self._full_update = bytes(self.doc.get_update())
        return self._full_update

    def diff(self, state_vector: bytes) -> bytes:
        """What a peer with ``state_vector`` lacks, as a v1 update. Raises UpdateFormatError."""
        if state_vector in (b"", b"\x00"):
            return self.full_update
        try:
            return bytes(self.doc.get_update(state_vector))
        except (ValueError, UpdateFormatError) as exc:
            raise UpdateFormatError(f"invalid state vector: {exc}") from exc


def build_doc(snapshot_v1: bytes | None, messages: Sequence[bytes]) -> tuple[
    pycrdt.Doc[Any], dict[int, AwarenessEntry], bool, int
]:
    """Apply a snapshot (v1) and stream messages to a fresh doc.

    Returns (doc, awareness states, changed-by-the-stream, number of entries skipped as
    malformed). A malformed entry is logged and skipped so that one bad message cannot make a
    document unloadable.
    """
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if snapshot_v1 is not None:
        try:
            doc.apply_update(snapshot_v1)
        except ValueError as exc:
            # it decoded as v2 with ysync's codec, so it is valid: pycrdt cannot read it
            raise PycrdtCannotRead(f"stored snapshot: {exc}") from exc
    changes: list[bool] = []
    subscription = doc.observe(lambda _event: changes.append(True))
    updates, awareness, skipped = split_stream_messages(messages)
    if skipped:
        log.warning("skipped %d malformed stream messages", skipped)
    for update in updates:
        try:
            doc.apply_update(update)
        except ValueError as exc:
            if is_valid_update(update):
                raise PycrdtCannotRead(f"stream update: {exc}") from exc
            log.warning("skipping stream update that does not apply (%d bytes): %s",
                        len(update), exc)
            skipped += 1
    doc.unobserve(subscription)
    return doc, awareness, bool(changes), skipped


@dataclass(frozen=True, slots=True)
class DocSources:
    """What a document is made of: its stored snapshot (v2, merged) and its stream messages."""

    messages: list[bytes]
    last_id: StreamId
    snapshot_v2: bytes | None
    references: tuple[str, ...]


async def read_doc_sources(
    client: aioredis.Redis, storage: Storage, prefix: str, room: str, docid: str
) -> DocSources:
    """Read (room, docid). The stream is read BEFORE storage, so that a compaction running in
    between can only make storage newer, never lose what the stream held."""
    messages, last_id = await read_whole_stream(client, room_stream_key(prefix, room, docid))
    stored = await storage.retrieve_doc(room, docid)
    if stored is None:
        return DocSources(messages, last_id, None, ())
    return DocSources(messages, last_id, stored.update_v2, stored.references)


def build_from_sources(sources: DocSources) -> tuple[
    DocState, dict[int, AwarenessEntry], bool, int
]:
    """:func:`build_doc` of the sources (the snapshot converted from v2), falling back to a
    :class:`CodecDoc` for content pycrdt cannot read. CPU-bound."""
    from ysync.updates import merge_v2, v1_to_v2, v2_to_v1

    snapshot_v1 = None
    if sources.snapshot_v2 is not None:
        snapshot_v1 = v2_to_v1(sources.snapshot_v2)
    try:
        return build_doc(snapshot_v1, sources.messages)
    except PycrdtCannotRead as exc:
        log.info("pycrdt cannot read this document (%s): using ysync's codec", exc)
    updates, awareness, skipped = split_stream_messages(sources.messages)
    parts = [] if sources.snapshot_v2 is None else [sources.snapshot_v2]
    for update in updates:
        try:
            parts.append(v1_to_v2(update))
        except UpdateFormatError:
            skipped += 1
    merged = merge_v2(parts) if parts else v1_to_v2(b"\x00\x00")
    # whether the stream added anything cannot be told cheaply here: any update counts
    return CodecDoc(merged), awareness, len(parts) > (sources.snapshot_v2 is not None), skipped


def compact_sources(sources: DocSources) -> bytes | None:
    """The whole document as a v2 snapshot if the stream added anything, else ``None``.

    Pure and CPU-bound: the worker runs it in a separate process, so that compacting a large
    document never holds the event loop of a server running the worker in-process.
    """
    from ysync.updates import v1_to_v2

    doc, _awareness, changed, _skipped = build_from_sources(sources)
    if not changed:
        return None
    if isinstance(doc, CodecDoc):
        return doc.update_v2
    return bytes(v1_to_v2(bytes(doc.get_update())))


async def load_doc(
    client: aioredis.Redis, storage: Storage, prefix: str, room: str, docid: str
) -> LoadedDoc:
    """Load (room, docid) into a document (built in a worker thread)."""
    sources = await read_doc_sources(client, storage, prefix, room, docid)
    doc, awareness, changed, skipped = await anyio.to_thread.run_sync(
        build_from_sources, sources)
    return LoadedDoc(doc, awareness, sources.last_id, sources.references, changed, skipped)
