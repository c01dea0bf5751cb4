"""The decoded form of a Yjs update, shared by the v1 and v2 codecs.

An update is a list of *sections* (one client, its first clock, its structs) and a delete set.
Structs are plain tuples, built in the hot loops of the decoders without any class overhead:

* ``(GC, length)`` and ``(SKIP, length)``;
* ``(ref, length, origin, right_origin, parent, parent_sub, content)`` for an Item, where
  ``ref`` is the content type (:data:`DELETED` ... :data:`DOC`), ``origin`` and
  ``right_origin`` are ``(client, clock)`` or ``None``, ``parent`` is ``None`` (an origin is
  known), a root type name (:data:`~ysync.updates.lib0.JsString`) or the ``(client, clock)``
  of the parent type's item, and ``parent_sub`` is the map key or ``None``.

Content by ``ref`` (normalized so that either encoder writes exactly what Yjs writes):

========  =====================================================================
DELETED   ``None`` (the length says how much)
JSON      ``list[bytes]``: each element as UTF-8 ``JSON.stringify`` text (or ``undefined``)
BINARY    ``bytes``
STRING    :data:`~ysync.updates.lib0.JsString`; ``length`` is its UTF-16 length
EMBED     a JavaScript value (see :mod:`ysync.updates.jsvalues`)
FORMAT    ``(key, value)``: a JsString and a JavaScript value
TYPE      ``(type_ref, name)``: name is the XML element/hook name, else ``None``
ANY       ``bytes``: the ``length`` values encoded as lib0 ``writeAny`` would
DOC       ``(guid, options)``: a JsString and the options encoded with ``writeAny``
========  =====================================================================

The delete set maps a client to a flat list ``[clock, length, clock, length, ...]`` in the
order read (clients in order of first appearance).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GC = 0
DELETED = 1
JSON = 2
BINARY = 3
STRING = 4
EMBED = 5
FORMAT = 6
TYPE = 7
ANY = 8
DOC = 9
SKIP = 10

#: Type references of ContentType (``typeRefs`` in Yjs) that carry a name.
XML_ELEMENT = 3
XML_HOOK = 5
TYPE_REF_COUNT = 7

#: How many structs a v2 update may describe per byte of its size. Run-length encoding lets a
#: few bytes stand for many structs, so this bounds the work and the memory a small (hostile)
#: input can cause; real documents stay below 1 (see docs/updates.md).
MAX_STRUCTS_PER_BYTE = 64
#: Structs always allowed, whatever the size.
MIN_STRUCT_BUDGET = 1 << 16

Struct = tuple[Any, ...]
ID = tuple[int, int]
Section = tuple[int, int, list[Struct]]
DeleteSet = dict[int, list[int]]


class Update:
    """A decoded update: ``sections`` (client, first clock, structs) and ``delete_set``."""

    __slots__ = ("sections", "delete_set")

    def __init__(self, sections: list[Section], delete_set: DeleteSet) -> None:
        self.sections = sections
        self.delete_set = delete_set


def struct_budget(size: int) -> int:
    """How many structs a v2 update of ``size`` bytes may hold before it is refused."""
    return MAX_STRUCTS_PER_BYTE * size + MIN_STRUCT_BUDGET


def writer_groups(sections: list[Section]) -> list[tuple[int, int, list[list[Struct]]]]:
    """Group sections the way Yjs's ``LazyStructWriter`` writes them.

    Empty sections vanish and consecutive sections of one client become one (whose clock is
    the first one's), exactly as ``convertUpdateFormat`` does.
    """
    groups: list[tuple[int, int, list[list[Struct]]]] = []
    for client, clock, structs in sections:
        if not structs:
            continue
        if groups and groups[-1][0] == client:
            groups[-1][2].append(structs)
        else:
            groups.append((client, clock, [structs]))
    return groups


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a big update is decoded.

    Decoding allocates a few objects per struct and none of them form cycles, yet each
    collection would walk all of them again: pausing saves 15-20 % on large documents.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
