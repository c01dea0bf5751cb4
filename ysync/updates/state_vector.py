"""The state vector of a v2 update, as ``Y.encodeStateVectorFromUpdateV2`` reads it.

Only clocks matter here, so the structs are passed over without being built: strings are not
cut out of their column and values are checked, not decoded. As in Yjs, the delete set is not
read, a client counts from clock 0 up to its first gap (a Skip, or a first clock above 0), and a
client whose structs appear in two separate places is listed twice.
"""

from __future__ import annotations

from ysync.errors import UpdateFormatError
from ysync.updates.jsvalues import json_parse, normalize_doc_options, read_any, skip_any
from ysync.updates.lib0 import (
    BytesLike,
    js_to_str,
    read_var_bytes,
    read_varuint,
    write_varuint,
)
from ysync.updates.structs import (
    ANY,
    BINARY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    JSON,
    SKIP,
    STRING,
    TYPE,
    TYPE_REF_COUNT,
    XML_ELEMENT,
    XML_HOOK,
    gc_paused,
    struct_budget,
)
from ysync.updates.v2 import Columns

# What the state vector needs of a section: client, first clock, number of structs, length
# of the first struct, whether that is a Skip, total length before the first Skip, number of
# structs before it, whether there is a Skip.
_Section = tuple[int, int, int, int, bool, int, int, bool]


def _skip_content(
    cols: Columns, data: bytes, pos: int, ref: int, budget: list[int]
) -> tuple[int, int]:
    """Pass over an Item's content; return ``(length, next position in rest)``."""
    if ref == DELETED:
        return cols.length(), pos
    if ref == ANY:
        count = cols.length()
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        for _ in range(count):
            pos = skip_any(data, pos)
        return count, pos
    if ref == FORMAT or ref == EMBED:
        if ref == FORMAT:
            cols.key(budget)
        return 1, skip_any(data, pos)
    if ref == TYPE:
        type_ref = cols.type_ref()
        if type_ref >= TYPE_REF_COUNT:
            raise UpdateFormatError(f"unknown type reference {type_ref}")
        if type_ref == XML_ELEMENT or type_ref == XML_HOOK:
            cols.key(budget)
        return 1, pos
    if ref == BINARY:
        return 1, read_var_bytes(data, pos)[1]
    if ref == JSON:
        count = cols.length()
        for _ in range(count):
            text = js_to_str(cols.string())
            if text != "undefined":
                json_parse(text)
        return count, pos
    if ref == DOC:
        guid = cols.string()
        opts, pos = read_any(data, pos)
        normalize_doc_options(guid, opts)  # Yjs fails on some options
        return 1, pos
    raise UpdateFormatError(f"unknown content type {ref}")


def _scan(data: bytes) -> list[_Section]:
    budget = [struct_budget(len(data))]
    cols = Columns(data)
    pos = cols.rest_start
    client_of = cols.client
    left_clock = cols.left_clock
    right_clock = cols.right_clock
    next_info = cols.info
    skip_string = cols.strings.skip
    sections: list[_Section] = []
    num_sections, pos = read_varuint(data, pos)
    if num_sections * 2 > len(data) - pos:
        raise UpdateFormatError("count exceeds the remaining data")
    for _ in range(num_sections):
        num_structs, pos = read_varuint(data, pos)
        client = client_of()
        clock, pos = read_varuint(data, pos)
        budget[0] -= num_structs
        if budget[0] < 0:
            raise UpdateFormatError("update describes too many structs for its size")
        first_length = before = counted = 0
        skip = first_is_skip = False
        for i in range(num_structs):
            info = next_info()
            ref = info & 0x1F
            if info == SKIP:
                length, pos = read_varuint(data, pos)
                if not skip:
                    skip = True
                    first_is_skip = i == 0
            elif ref == GC:
                length = cols.length()
            else:
                if info & 0x80:
                    client_of()
                    left_clock()
                if info & 0x40:
                    client_of()
                    right_clock()
                if not info & 0xC0:
                    if cols.parent_info() == 1:
                        skip_string()
                    else:
                        client_of()
                        left_clock()
                    if info & 0x20:
                        skip_string()
                if ref == STRING:
                    length = skip_string()
                else:
                    length, pos = _skip_content(cols, data, pos, ref, budget)
            if i == 0:
                first_length = length
            if not skip:
                before += length
                counted += 1
        sections.append(
            (client, clock, num_structs, first_length, first_is_skip, before, counted, skip)
        )
    return sections


def state_vector_from_v2(update: BytesLike) -> bytes:
    """The v1-encoded state vector of a v2 update, as ``Y.encodeStateVectorFromUpdateV2``.

    (What y-redis stores beside a snapshot.) Raises :class:`~ysync.errors.UpdateFormatError`
    if the structs of ``update`` are not valid v2; like Yjs, the delete set is not read.
    """
    data = bytes(update)
    try:
        with gc_paused():
            sections = _scan(data)
    except StopIteration as exc:
        raise UpdateFormatError("a column of the update ended early") from exc
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of data") from exc
    entries = bytearray()
    size = 0
    current = -1  # no client yet
    clock_end = 0
    stop = True
    for client, clock, count, first_length, first_is_skip, before, counted, skip in sections:
        if count == 0:
            continue  # Yjs's reader yields nothing for an empty section
        if client != current:
            if current >= 0 and clock_end != 0:
                size += 1
                write_varuint(entries, current)
                write_varuint(entries, clock_end)
            if current < 0 and clock == 0 and first_is_skip:
                clock_end = first_length  # the very first struct: Yjs counts it before looking
            else:
                clock_end = 0
            current = client
            stop = clock != 0
        if not stop and counted:
            clock_end = clock + before
        if skip:
            stop = True
    if current >= 0 and clock_end != 0:
        size += 1
        write_varuint(entries, current)
        write_varuint(entries, clock_end)
    out = bytearray()
    write_varuint(out, size)
    return bytes(out + entries)
