"""Merging v2 updates, as Yjs's ``updates.js`` does.

:func:`merge_v2` follows ``Y.mergeUpdatesV2`` step by step (its ``LazyStructReader`` with
skips filtered, the write order of higher clients first, slicing of overlapping structs,
merging of adjacent GC structs, ``Skip`` structs over gaps, ``mergeDeleteSets``) so that its
output is the same bytes, not only the same document.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cmp_to_key
from typing import Any

from ysync.errors import UpdateFormatError
from ysync.updates.jsvalues import read_any
from ysync.updates.lib0 import BytesLike, JsString, js_from_utf16
from ysync.updates.structs import (
    ANY,
    DELETED,
    GC,
    JSON,
    SKIP,
    STRING,
    DeleteSet,
    Section,
    Update,
    gc_paused,
)
from ysync.updates.v1 import decode_v1, encode_v1
from ysync.updates.v2 import decode_v2, encode_v2

# A block while merging: [client, clock, length, struct]; GC and Skip lengths change in place.
Block = list[Any]


def _blocks(update: Update) -> list[Block]:
    """The structs of ``update`` in reading order, Skips left out (``filterSkips``)."""
    blocks: list[Block] = []
    for client, clock, structs in update.sections:
        for struct in structs:
            length = struct[1]
            if struct[0] != SKIP:
                blocks.append([client, clock, length, struct])
            clock += length
    return blocks


def _slice_content(ref: int, content: Any, diff: int, mend: bool) -> object:
    """The right part of ``content`` after ``diff`` units.

    With ``mend`` as ``AbstractContent.splice`` (a cut surrogate pair leaves U+FFFD on both
    sides), else as ``content.write(encoder, offset)`` (``str.slice``: a lone half stays).
    """
    if ref == DELETED:
        return None
    if ref == JSON:
        return content[diff:]
    if ref == ANY:
        data: bytes = content
        pos = 0
        for _ in range(diff):
            _, pos = read_any(data, pos)
        return data[pos:]
    if ref == STRING:
        text: JsString = content
        if type(text) is bytes and text.isascii():
            return text[diff:]
        units = (
            text.decode("utf-8").encode("utf-16-le")
            if isinstance(text, bytes)
            else text.encode("utf-16-le", "surrogatepass")
        )
        right = units[diff * 2 :]
        last_left = int.from_bytes(units[diff * 2 - 2 : diff * 2], "little")
        if mend and 0xD800 <= last_left <= 0xDBFF:  # a cut pair: Yjs puts U+FFFD on both sides
            right = "\ufffd".encode("utf-16-le") + right[2:]
        return js_from_utf16(right)
    raise UpdateFormatError("cannot split content of length one")


def slice_block(block: Block, diff: int, mend: bool = True) -> Block:
    """``sliceStruct``: the part of ``block`` from ``diff`` on (``0 < diff < length``).

    ``mend=False`` gives what ``struct.write(encoder, diff)`` writes instead (the same but
    for a string cut inside a surrogate pair, whose right half then stays a lone surrogate).
    """
    client, clock, length, struct = block
    assert isinstance(clock, int) and isinstance(length, int)
    ref = struct[0]
    if ref == GC or ref == SKIP:
        return [client, clock + diff, length - diff, (ref, length - diff)]
    _, _, _, right_origin, parent, parent_sub, content = struct
    sliced = (
        ref,
        length - diff,
        (client, clock + diff - 1),
        right_origin,
        parent,
        parent_sub,
        _slice_content(ref, content, diff, mend),
    )
    return [client, clock + diff, length - diff, sliced]


def merge_delete_sets(sets: list[DeleteSet]) -> DeleteSet:
    """``mergeDeleteSets`` followed by ``sortAndMergeDeleteSet``."""
    merged: DeleteSet = {}
    for i, ds in enumerate(sets):
        for client, items in ds.items():
            if client in merged:
                continue
            collected = list(items)
            for later in sets[i + 1 :]:
                collected += later.get(client, [])
            pairs = sorted(zip(collected[::2], collected[1::2], strict=True), key=_clock)
            flat: list[int] = []
            for clock, length in pairs:
                if flat and flat[-2] + flat[-1] >= clock:
                    flat[-1] = max(flat[-1], clock + length - flat[-2])
                else:
                    flat += (clock, length)
            merged[client] = flat
    return merged


def _clock(pair: tuple[int, int]) -> int:
    return pair[0]


class _Reader:
    __slots__ = ("blocks", "index", "curr")

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.index = 0
        self.curr: Block | None = blocks[0] if blocks else None

    def next(self) -> Block | None:
        self.index += 1
        self.curr = self.blocks[self.index] if self.index < len(self.blocks) else None
        return self.curr


def _order(reader: _Reader) -> tuple[int, int]:
    curr = reader.curr
    assert curr is not None
    return -curr[0], curr[1]


def _js_compare(a: _Reader, b: _Reader) -> int:
    """The comparator of ``mergeUpdatesV2``, inconsistent for an Item and a GC at one clock."""
    x, y = a.curr, b.curr
    assert x is not None and y is not None
    if x[0] != y[0]:
        return int(y[0] - x[0])
    if x[1] != y[1]:
        return int(x[1] - y[1])
    return 0 if (x[3][0] == GC) == (y[3][0] == GC) else -1


def _v8_sort(items: list[_Reader]) -> None:
    """``Array.prototype.sort`` of V8 with :func:`_js_compare`, for fewer than 64 items.

    V8 sorts such a short array as one TimSort run: ``CountAndMakeRun`` (a descending start
    is reversed), then ``BinaryInsertionSort``. With an inconsistent comparator the result
    depends on exactly which pairs are compared, so this does the same comparisons.
    """
    n = len(items)
    if n < 2:
        return
    descending = _js_compare(items[1], items[0]) < 0
    run = 2
    while run < n and (_js_compare(items[run], items[run - 1]) < 0) == descending:
        run += 1
    if descending:
        items[:run] = items[run - 1 :: -1]
    for start in range(run, n):
        pivot = items[start]
        left, right = 0, start
        while left < right:
            middle = (left + right) >> 1
            if _js_compare(pivot, items[middle]) < 0:
                right = middle
            else:
                left = middle + 1
        items[left + 1 : start + 1] = items[left:start]
        items[left] = pivot


def _sort(readers: list[_Reader]) -> None:
    """Order the readers as Yjs does: higher clients first, then lower clocks."""
    keys = [_order(r) for r in readers]
    if len(set(keys)) < len(keys):
        kinds: dict[tuple[int, int], bool] = {}
        for key, reader in zip(keys, readers, strict=True):
            assert reader.curr is not None
            if kinds.setdefault(key, reader.curr[3][0] == GC) != (reader.curr[3][0] == GC):
                # an Item and a GC at one clock: only V8's own comparisons give its order
                if len(readers) < 64:
                    _v8_sort(readers)
                else:  # CPython's list.sort is the TimSort V8 ported: the same comparisons
                    readers.sort(key=cmp_to_key(_js_compare))
                return
    readers.sort(key=_order)  # a consistent order: every stable sort agrees


def merge_v2(updates: Sequence[BytesLike]) -> bytes:
    """Merge v2 updates into one v2 update, byte for byte as ``Y.mergeUpdatesV2``.

    The result holds every struct and deletion of the inputs, missing parts included (as
    Skip structs), so applying it is applying all the updates. A single update is returned
    unchanged (and unchecked), as Yjs does; no update gives the empty update. Raises
    :class:`~ysync.errors.UpdateFormatError` if an update is not a v2 update.
    """
    if len(updates) == 1:
        return bytes(updates[0])
    with gc_paused():
        return encode_v2(merge_decoded([decode_v2(bytes(u)) for u in updates]))


def merge_v1(updates: Sequence[BytesLike]) -> bytes:
    """Merge v1 updates into one v1 update, byte for byte as ``Y.mergeUpdates``.

    Like :func:`merge_v2`, for v1 updates.
    """
    if len(updates) == 1:
        return bytes(updates[0])
    with gc_paused():
        return encode_v1(merge_decoded([decode_v1(bytes(u)) for u in updates]))


def merge_decoded(decoded: Sequence[Update]) -> Update:
    """The merge of decoded updates (as :func:`merge_v2` computes it), not yet encoded.

    A single update is returned as it is.
    """
    if len(decoded) == 1:
        return decoded[0]
    readers = [_Reader(_blocks(u)) for u in decoded]
    sections: list[Section] = []

    def write(block: Block) -> None:
        client, clock, length, struct = block
        ref = struct[0]
        if ref == GC or ref == SKIP:
            struct = (ref, length)
        if sections and sections[-1][0] == client:
            sections[-1][2].append(struct)
        else:
            sections.append((client, clock, [struct]))

    current: Block | None = None
    while True:
        readers = [r for r in readers if r.curr is not None]
        if not readers:
            break
        _sort(readers)
        reader = readers[0]
        head = reader.curr  # not reader.curr narrowed: mypyc would check reader.next() is not None
        assert head is not None
        first_client = head[0]
        if current is not None:
            curr: Block | None = head
            iterated = False
            end = current[1] + current[2]
            while curr is not None and curr[1] + curr[2] <= end and curr[0] >= current[0]:
                curr = reader.next()
                iterated = True
            if curr is None or curr[0] != first_client or (iterated and curr[1] > end):
                continue
            if first_client != current[0]:
                write(current)
                current = curr
                reader.next()
            elif end < curr[1]:
                if current[3][0] == SKIP:
                    current[2] = curr[1] + curr[2] - current[1]
                else:
                    write(current)
                    gap = curr[1] - end
                    current = [first_client, end, gap, (SKIP, gap)]
            else:
                diff = end - curr[1]
                if diff > 0:
                    if current[3][0] == SKIP:
                        current[2] -= diff
                    else:
                        curr = slice_block(curr, diff)
                if current[3][0] == GC and curr[3][0] == GC:
                    current[2] += curr[2]
                else:
                    write(current)
                    current = curr
                    reader.next()
        else:
            current = head
            reader.next()
        assert current is not None
        nxt: Block | None = reader.curr
        while (
            nxt is not None
            and nxt[0] == first_client
            and nxt[1] == current[1] + current[2]
            and nxt[3][0] != SKIP
        ):
            write(current)
            current = nxt
            nxt = reader.next()
    if current is not None:
        write(current)
    ds = merge_delete_sets([u.delete_set for u in decoded])
    return Update(sections, ds)
