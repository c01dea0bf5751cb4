"""Garbage collection of a decoded update, as a Y.Doc with ``gc`` on does it.

y-redis's worker applies the stream to a fresh ``Y.Doc`` and encodes it again; Yjs then (in
``tryGcDeleteSet``/``Item.gc`` and ``tryToMergeWithLefts``) replaces the content of every
deleted item by ``ContentDeleted``, replaces everything inside a deleted shared type by ``GC``
structs, and merges neighbouring structs. :func:`collect_garbage` does the same on the update
itself, without integrating anything: the content of every struct that is not deleted keeps
the exact value Yjs wrote, so a snapshot never grows with deleted text and never re-encodes
what the writers wrote.

What it cannot know without integrating (the YATA order of concurrent inserts), it leaves as
it is, which is always correct and at most a little larger:

* an item deleted only implicitly (the loser of two concurrent writes of one map key, an item
  inserted concurrently into a type another client deleted) is not in the delete set and keeps
  its content; Yjs deletes it again when it integrates the snapshot;
* two neighbouring structs are merged only when nothing else can stand between them: the right
  one's origin is the left one's last unit and no other item has that origin;
* a deleted item whose parent cannot be resolved (it depends on a missing struct) becomes
  ``ContentDeleted``, never ``GC``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from typing import Any

from ysync.updates.lib0 import JsString, js_from_utf16
from ysync.updates.merge import merge_delete_sets, slice_block
from ysync.updates.structs import (
    ANY,
    DELETED,
    GC,
    ID,
    JSON,
    SKIP,
    STRING,
    TYPE,
    DeleteSet,
    Section,
    Struct,
    Update,
)

#: Content that ``mergeWith`` joins (ContentDeleted, ContentString, ContentAny, ContentJSON).
_MERGEABLE = frozenset((DELETED, STRING, ANY, JSON))

# What an item's parent resolves to: a root type name, the id of a type's item, or one of these
# (plain ints, compared with ==: a compiled build does not keep tuple constants' identity).
_UNKNOWN = 0
_IN_GC = 1


class _Client:
    """The structs of one client, in clock order, with their first clocks (for lookups)."""

    __slots__ = ("client", "clocks", "structs")

    def __init__(self, client: int) -> None:
        self.client = client
        self.clocks: list[int] = []
        self.structs: list[Struct] = []

    def find(self, clock: int) -> int:
        """Index of the struct holding ``clock``, or -1."""
        i = bisect_right(self.clocks, clock) - 1
        if i < 0 or clock >= self.clocks[i] + self.structs[i][1]:
            return -1
        return i


def head(struct: Struct, client: int, clock: int, n: int) -> Struct:
    """The first ``n`` units of a struct at ``(client, clock)`` (``AbstractContent.splice``'s
    left side: a cut surrogate pair leaves U+FFFD, as in Yjs). Also used by ysync.doctree."""
    ref = struct[0]
    if ref == GC or ref == SKIP:
        return (ref, n)
    _, length, origin, right_origin, parent, parent_sub, content = struct
    if ref == DELETED:
        left: Any = None
    elif ref == JSON:
        left = content[:n]
    elif ref == ANY:
        tail = slice_block([client, clock, length, struct], n)[3][6]
        left = content[: len(content) - len(tail)]
    elif ref == STRING:
        units = _utf16(content)[: n * 2]
        if 0xD800 <= int.from_bytes(units[-2:], "little") <= 0xDBFF:
            units = units[:-2] + "\ufffd".encode("utf-16-le")
        left = js_from_utf16(units)
    else:
        raise ValueError(f"content {ref} of length one cannot be cut")
    return (ref, n, origin, right_origin, parent, parent_sub, left)


def _utf16(text: JsString) -> bytes:
    if isinstance(text, bytes):
        return text.decode("utf-8").encode("utf-16-le")
    return text.encode("utf-16-le", "surrogatepass")


def _split_at_deletions(entry: _Client, ranges: list[int]) -> None:
    """Cut the items of ``entry`` so that each lies wholly inside or outside ``ranges``."""
    cuts = sorted({*ranges[0::2], *(c + n for c, n in zip(ranges[0::2], ranges[1::2],
                                                            strict=True))})
    clocks: list[int] = []
    structs: list[Struct] = []
    for clock, struct in zip(entry.clocks, entry.structs, strict=True):
        end = clock + struct[1]
        first = bisect_right(cuts, clock)
        if struct[0] not in _MERGEABLE or first == len(cuts) or cuts[first] >= end:
            # no cut inside (content of length one, GC and Skip need none)
            clocks.append(clock)
            structs.append(struct)
            continue
        start = clock
        rest = struct
        for cut in cuts[first:bisect_right(cuts, end - 1)]:
            clocks.append(start)
            structs.append(head(rest, entry.client, start, cut - start))
            rest = slice_block([entry.client, start, rest[1], rest], cut - start)[3]
            start = cut
        clocks.append(start)
        structs.append(rest)
    entry.clocks = clocks
    entry.structs = structs


def _deleted_flags(entry: _Client, ranges: list[int]) -> list[bool]:
    """For each struct of ``entry``: does the delete set cover it (wholly)?"""
    starts = ranges[0::2]
    flags = []
    for clock, struct in zip(entry.clocks, entry.structs, strict=True):
        i = bisect_right(starts, clock) - 1
        flags.append(
            struct[0] not in (GC, SKIP)
            and (struct[0] == DELETED
                 or (i >= 0 and clock + struct[1] <= ranges[2 * i] + ranges[2 * i + 1]))
        )
    return flags


class _Resolver:
    """Finds the parent of items and whether they lie inside a deleted shared type."""

    def __init__(self, clients: dict[int, _Client], deleted: dict[int, list[bool]]) -> None:
        self._clients = clients
        self._deleted = deleted
        self._parent: dict[tuple[int, int], Any] = {}
        self._dead: dict[ID, bool] = {}

    def _locate(self, ident: ID) -> tuple[int, int] | None:
        entry = self._clients.get(ident[0])
        if entry is None:
            return None
        i = entry.find(ident[1])
        return None if i < 0 else (ident[0], i)

    def parent(self, key: tuple[int, int]) -> Any:
        """A root name (``bytes``/``str``), the id of the parent type's item, or a marker."""
        chain: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        found: Any = _UNKNOWN
        current: tuple[int, int] | None = key
        while current is not None:
            known = self._parent.get(current)
            if known is not None:
                found = known
                break
            if current in seen:
                break  # a cycle: malformed, stays unknown
            seen.add(current)
            chain.append(current)
            struct = self._clients[current[0]].structs[current[1]]
            if struct[0] == GC:
                found = _IN_GC
                break
            if struct[0] == SKIP:
                break
            if struct[4] is not None:
                found = struct[4]
                break
            neighbour = struct[2] if struct[2] is not None else struct[3]
            current = None if neighbour is None else self._locate(neighbour)
        for link in chain:
            self._parent[link] = found
        return found

    def dead(self, key: tuple[int, int]) -> bool:
        """Whether the item at ``key`` lies inside a deleted (or collected) shared type."""
        parent = self.parent(key)
        path: list[ID] = []
        answer = False
        while True:
            if parent == _IN_GC:
                answer = True
                break
            if not isinstance(parent, tuple):
                break  # unknown, or a root type: never collected
            cached = self._dead.get(parent)
            if cached is not None:
                answer = cached
                break
            if parent in path:
                break
            path.append(parent)
            where = self._locate(parent)
            if where is None:
                break
            struct = self._clients[where[0]].structs[where[1]]
            if struct[0] == GC or self._deleted[where[0]][where[1]]:
                answer = True
                break
            if struct[0] != TYPE:
                break  # not a type: malformed, leave it to Yjs
            parent = self.parent(where)
        for ident in path:
            self._dead[ident] = answer
        return answer


def _join(left: Struct, right: Struct) -> Struct:
    ref = left[0]
    if ref == DELETED:
        content: Any = None
    elif ref == STRING:
        a, b = left[6], right[6]
        content = a + b if type(a) is bytes and type(b) is bytes else js_from_utf16(
            _utf16(a) + _utf16(b))
    else:  # ANY (bytes) and JSON (lists) concatenate
        content = left[6] + right[6]
    return (ref, left[1] + right[1], left[2], left[3], left[4], left[5], content)


def _merge_neighbours(entry: _Client, origins: Counter[ID]) -> list[Struct]:
    """Merge structs the way ``tryToMergeWithLefts`` would, where it is certain to."""
    client = entry.client
    out: list[Struct] = []
    end = -1
    for clock, struct in zip(entry.clocks, entry.structs, strict=True):
        if out and clock == end:
            left = out[-1]
            ref = struct[0]
            if ref == GC and left[0] == GC:
                out[-1] = (GC, left[1] + struct[1])
                end += struct[1]
                continue
            if (
                ref == left[0]
                and ref in _MERGEABLE
                and struct[2] == (client, end - 1)
                and struct[3] == left[3]
                and origins[(client, end - 1)] == 1
            ):
                out[-1] = _join(left, struct)
                end += struct[1]
                continue
        out.append(struct)
        end = clock + struct[1]
    return out


def collect_garbage(update: Update) -> Update:
    """The update as a Y.Doc with ``gc`` on would encode it (see the module docstring).

    The state vector, the delete set and every struct that is not deleted describe the same
    document as ``update``; deleted content is dropped. Missing structs (Skips) and what
    depends on them are kept, as Yjs keeps pending structs.
    """
    ds: DeleteSet = merge_delete_sets([update.delete_set])
    clients: dict[int, _Client] = {}
    order: list[int] = []
    for client, clock, structs in update.sections:
        entry = clients.get(client)
        if entry is None:
            entry = clients[client] = _Client(client)
            order.append(client)
        for struct in structs:
            entry.clocks.append(clock)
            entry.structs.append(struct)
            clock += struct[1]
    deleted: dict[int, list[bool]] = {}
    for client, entry in clients.items():
        ranges = ds.get(client, [])
        if ranges:
            _split_at_deletions(entry, ranges)
        deleted[client] = _deleted_flags(entry, ranges)
    resolver = _Resolver(clients, deleted)
    # decide everything before changing anything: the resolver reads the structs as they came
    collected = [
        (entry, i, resolver.dead((client, i)))
        for client, entry in clients.items()
        for i, flag in enumerate(deleted[client]) if flag
    ]
    for entry, i, dead in collected:
        struct = entry.structs[i]
        if dead:
            entry.structs[i] = (GC, struct[1])
        elif struct[0] != DELETED:
            entry.structs[i] = (DELETED, struct[1], *struct[2:6], None)
    origins: Counter[ID] = Counter(
        s[2] for entry in clients.values() for s in entry.structs
        if s[0] not in (GC, SKIP) and s[2] is not None
    )
    sections: list[Section] = []
    for client in order:
        entry = clients[client]
        if entry.structs:
            sections.append((client, entry.clocks[0], _merge_neighbours(entry, origins)))
    return Update(sections, ds)
