"""Loading a document as y-redis does (docs/protocol.md): snapshot + every stream message.

Used by the server for joining clients and by the worker for compaction. The document is
assembled with ysync's own codec (:mod:`ysync.updates.document`), never through a Y.Doc that
would re-encode content, and the CPU-heavy part (:func:`build_from_sources`) is a pure function
run in a worker process so that a large document does not stall the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_process

from ysync.protocol import AwarenessEntry, split_stream_messages
from ysync.storage.base import Storage
from ysync.streams import Layout, StreamId, read_whole_stream
from ysync.updates import diff_v1
from ysync.updates.document import assemble, compact, full_v1, state_vector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BuiltDoc:
    """A document assembled from its sources (picklable: it is built in a worker process).

    ``full_update`` is the whole document as one v1 update, ``state_vector`` its v1 state
    vector; ``changed`` says whether the stream added anything the snapshot lacked, ``skipped``
    counts stream entries left out as malformed.
    """

    full_update: bytes
    state_vector: bytes
    awareness: dict[int, AwarenessEntry]
    changed: bool
    skipped: int


@dataclass(slots=True)
class LoadedDoc:
    """A document as loaded from storage and its stream.

    ``last_id`` is the id of the last stream entry read (``0-0`` for none); ``references`` the
    snapshots merged; ``changed`` whether the stream added anything the snapshots lacked.
    """

    full_update: bytes
    state_vector: bytes
    awareness: dict[int, AwarenessEntry]
    last_id: StreamId
    references: tuple[str, ...]
    changed: bool
    skipped: int = 0

    async def diff(self, state_vector: bytes) -> bytes:
        """What a peer with ``state_vector`` lacks, as a v1 update (``Y.diffUpdate`` of the
        whole document). Raises UpdateFormatError for a malformed state vector."""
        if state_vector in (b"", b"\x00"):
            return self.full_update
        if len(self.full_update) <= _INLINE_BYTES:
            return diff_v1(self.full_update, state_vector)
        return await anyio.to_process.run_sync(diff_v1, self.full_update, state_vector,
                                               cancellable=True)


#: Documents up to this size (bytes of snapshot and stream, and stream entries) are assembled
#: and diffed on the event loop (a few milliseconds at most, less than a worker process's round
#: trip); larger ones in a worker process, so that a large document never stalls other rooms.
_INLINE_BYTES = 32 * 1024
_INLINE_MESSAGES = 64


@dataclass(frozen=True, slots=True)
class DocSources:
    """What a document is made of: its stored snapshot (v2, merged) and its stream messages."""

    messages: list[bytes]
    last_id: StreamId
    snapshot_v2: bytes | None
    references: tuple[str, ...]


async def read_doc_sources(
    client: Any, storage: Storage, layout: Layout | str, room: str, docid: str
) -> DocSources:
    """Read (room, docid) of ``layout`` (a prefix: y-redis's layout). The stream is read BEFORE
    storage, so that a compaction running in between can only make storage newer, never lose
    what the stream held."""
    if isinstance(layout, str):
        layout = Layout(layout)
    messages, last_id = await read_whole_stream(client, layout.room_key(room, docid))
    stored = await storage.retrieve_doc(room, docid)
    if stored is None:
        return DocSources(messages, last_id, None, ())
    return DocSources(messages, last_id, stored.update_v2, stored.references)


def build_from_sources(sources: DocSources) -> BuiltDoc:
    """Assemble the document of ``sources`` with ysync's codec: every struct's content stays
    the bytes Yjs wrote (nothing goes through a Y.Doc), pending structs included. CPU-bound."""
    updates, awareness, skipped = split_stream_messages(sources.messages)
    assembled = assemble(sources.snapshot_v2, updates)
    if assembled.invalid:
        log.warning("skipped %d stream updates that do not decode", assembled.invalid)
    return BuiltDoc(full_v1(assembled), state_vector(assembled.update), awareness,
                    assembled.changed, skipped + assembled.invalid)


def compact_sources(sources: DocSources) -> bytes | None:
    """The whole document as a garbage-collected v2 snapshot if the stream added anything,
    else ``None``.

    Pure and CPU-bound: the worker runs it in a separate process, so that compacting a large
    document never holds the event loop of a server running the worker in-process.
    """
    updates, _awareness, _skipped = split_stream_messages(sources.messages)
    assembled = assemble(sources.snapshot_v2, updates)
    if assembled.invalid:
        log.warning("skipped %d stream updates that do not decode", assembled.invalid)
    if not assembled.changed:
        return None
    return compact(assembled)


async def load_doc(
    client: Any, storage: Storage, layout: Layout | str, room: str, docid: str
) -> LoadedDoc:
    """Load (room, docid) of ``layout`` (or a prefix) into a document (built in a worker
    thread)."""
    sources = await read_doc_sources(client, storage, layout, room, docid)
    size = len(sources.snapshot_v2 or b"") + sum(map(len, sources.messages))
    if size <= _INLINE_BYTES and len(sources.messages) <= _INLINE_MESSAGES:
        built = build_from_sources(sources)
    else:
        built = await anyio.to_process.run_sync(build_from_sources, sources, cancellable=True)
    return LoadedDoc(built.full_update, built.state_vector, built.awareness, sources.last_id,
                     sources.references, built.changed, built.skipped)
