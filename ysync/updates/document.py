"""A whole document assembled from its snapshot and its stream, without a Y.Doc.

The server answers joiners and the worker writes snapshots from this: the snapshot (v2, as
stored) and the stream's updates (v1, as clients sent them) are decoded and merged struct by
struct (:func:`~ysync.updates.merge.merge_decoded`), so the content of every struct stays the
bytes Yjs wrote, and updates whose dependencies are missing are kept (as Skips), as Yjs keeps
pending structs and delete sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ysync.errors import UpdateFormatError
from ysync.updates.gc import collect_garbage
from ysync.updates.lib0 import BytesLike, write_varuint
from ysync.updates.merge import merge_decoded, merge_delete_sets
from ysync.updates.structs import SKIP, DeleteSet, Update, gc_paused
from ysync.updates.v1 import decode_v1, encode_v1
from ysync.updates.v2 import decode_v2, encode_v2

__all__ = ["Assembled", "assemble", "compact", "full_v1", "state_vector"]


@dataclass(frozen=True, slots=True)
class Assembled:
    """A document: ``update`` merges everything; ``changed`` says whether the stream's updates
    added anything the snapshot lacked; ``invalid`` counts updates that did not decode."""

    update: Update
    changed: bool
    invalid: int


def _coverage(update: Update | None) -> tuple[dict[int, list[int]], DeleteSet]:
    """The clock ranges the structs of ``update`` hold (Skips excluded) and its delete set."""
    if update is None:
        return {}, {}
    ranges: dict[int, list[int]] = {}
    for client, clock, structs in update.sections:
        flat = ranges.setdefault(client, [])
        for struct in structs:
            length = struct[1]
            if struct[0] != SKIP:
                if flat and flat[-1] == clock:
                    flat[-1] = clock + length
                else:
                    flat += (clock, clock + length)
            clock += length
    return {c: r for c, r in ranges.items() if r}, merge_delete_sets([update.delete_set])


#: Updates merged at once. ``mergeUpdates`` orders its readers again for every struct it writes,
#: so one merge of n updates costs about n log n per struct: many stream updates are merged in
#: groups, then the groups (the same document; only Yjs's exact bytes of a one-step merge of
#: them all are not promised).
_MERGE_GROUP = 16


def _merge_many(parts: list[Update]) -> Update:
    """Merge ``parts`` (the first may be a large snapshot, merged last, once)."""
    head, rest = parts[0], parts[1:]
    while len(rest) > _MERGE_GROUP:
        rest = [merge_decoded(rest[i:i + _MERGE_GROUP]) for i in range(0, len(rest), _MERGE_GROUP)]
    if not rest:
        return head
    return merge_decoded([head, merge_decoded(rest)])


def assemble(snapshot_v2: BytesLike | None, updates_v1: Sequence[BytesLike]) -> Assembled:
    """Merge a stored snapshot (v2) and stream updates (v1) into one decoded update.

    A stream update that does not decode is left out and counted in ``invalid``; a snapshot
    that does not decode raises :class:`~ysync.errors.UpdateFormatError`.
    """
    with gc_paused():
        base = None if snapshot_v2 is None else decode_v2(bytes(snapshot_v2))
        parts = [] if base is None else [base]
        invalid = 0
        for update in updates_v1:
            try:
                parts.append(decode_v1(bytes(update)))
            except UpdateFormatError:
                invalid += 1
        if not parts:
            return Assembled(Update([], {}), False, invalid)
        merged = _merge_many(parts)
        changed = len(parts) > (base is not None) and _coverage(merged) != _coverage(base)
        return Assembled(merged, changed, invalid)


def full_v1(assembled: Assembled) -> bytes:
    """The whole document as one v1 update (what a client with an empty state vector lacks)."""
    with gc_paused():
        return encode_v1(assembled.update)


def compact(assembled: Assembled) -> bytes:
    """The document as a v2 snapshot, garbage-collected as a Y.Doc would be."""
    with gc_paused():
        return encode_v2(collect_garbage(assembled.update))


def state_vector(update: Update) -> bytes:
    """The v1 state vector of what a Y.Doc holding ``update`` has integrated.

    Per client, the clock up to which its structs run from 0 without a gap; structs after a
    gap (pending in Yjs) do not count. Clients in descending order, as ``writeStateVector``.
    """
    clocks: dict[int, int] = {}
    stopped: set[int] = set()
    for client, clock, structs in update.sections:
        if client in stopped or clocks.get(client, 0) != clock:
            stopped.add(client)
            continue
        for struct in structs:
            if struct[0] == SKIP:
                stopped.add(client)
                break
            clock += struct[1]
        if clock:
            clocks[client] = clock
    out = bytearray()
    write_varuint(out, len(clocks))
    for client in sorted(clocks, reverse=True):
        write_varuint(out, client)
        write_varuint(out, clocks[client])
    return bytes(out)
