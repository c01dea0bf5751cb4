"""Reading and writing Yjs updates in the v2 encoding (``UpdateDecoderV2``/``UpdateEncoderV2``).

A v2 update is a feature flag (0), nine length-prefixed columns (key clocks, clients, left
clocks, right clocks, infos, strings, parent infos, type refs, lengths) and then the "rest"
stream: section headers, skip lengths, ``writeAny`` values, buffers and the delete set, whose
clocks are differences (``DSEncoderV2``).
"""

from __future__ import annotations

from typing import Any

from ysync.errors import UpdateFormatError
from ysync.updates.jsvalues import (
    canonical_any,
    normalize_doc_options,
    normalize_json_text,
    read_any,
    write_any,
)
from ysync.updates.lib0 import (
    JsString,
    StringColumn,
    encode_int_diff_opt_rle,
    encode_rle_u8,
    encode_string_column,
    encode_uint_opt_rle,
    int_diff_opt_rle_column,
    js_length,
    js_to_str,
    read_var_bytes,
    read_varuint,
    rle_u8_column,
    uint_opt_rle_column,
    write_var_bytes,
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
    ID,
    JSON,
    SKIP,
    STRING,
    TYPE,
    TYPE_REF_COUNT,
    XML_ELEMENT,
    XML_HOOK,
    DeleteSet,
    Section,
    Struct,
    Update,
    struct_budget,
    writer_groups,
)


class Columns:
    """The nine column readers of a v2 update and the position of the rest stream."""

    def __init__(self, data: bytes) -> None:
        _feature_flag, pos = read_varuint(data, 0)
        columns = []
        for _ in range(9):
            column, pos = read_var_bytes(data, pos)
            columns.append(column)
        self.key_clock = int_diff_opt_rle_column(columns[0]).__next__
        self.client = uint_opt_rle_column(columns[1]).__next__
        self.left_clock = int_diff_opt_rle_column(columns[2]).__next__
        self.right_clock = int_diff_opt_rle_column(columns[3]).__next__
        self.info = rle_u8_column(columns[4]).__next__
        self.strings = StringColumn(columns[5])
        self.string = self.strings.read
        self.string_sized = self.strings.read_sized
        self.parent_info = rle_u8_column(columns[6]).__next__
        self.type_ref = uint_opt_rle_column(columns[7]).__next__
        self.length = uint_opt_rle_column(columns[8]).__next__
        self.rest_start = pos
        self.keys: list[JsString] = []

    def key(self, budget: list[int]) -> JsString:
        """``readKey``: a new key from the string column or one seen before."""
        number = self.key_clock()
        if number < len(self.keys):
            key = self.keys[number]
            budget[0] -= len(key) + 1  # a repeated key costs output without input
            if budget[0] < 0:
                raise UpdateFormatError("update repeats its keys too much for its size")
            return key
        key = self.string()
        self.keys.append(key)
        return key


def _read_content(
    cols: Columns, data: bytes, pos: int, ref: int, budget: list[int]
) -> tuple[Any, int, int]:
    """Read an Item's content; return ``(content, length, next position in rest)``."""
    if ref == DELETED:
        return None, cols.length(), pos
    if ref == ANY:
        count = cols.length()
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        encoded, pos = canonical_any(data, pos, count)
        return encoded, count, pos
    if ref == FORMAT:
        key = cols.key(budget)
        value, pos = read_any(data, pos)
        return (key, value), 1, pos
    if ref == TYPE:
        type_ref = cols.type_ref()
        if type_ref >= TYPE_REF_COUNT:
            raise UpdateFormatError(f"unknown type reference {type_ref}")
        name = cols.key(budget) if type_ref == XML_ELEMENT or type_ref == XML_HOOK else None
        return (type_ref, name), 1, pos
    if ref == EMBED:
        value, pos = read_any(data, pos)
        return value, 1, pos
    if ref == BINARY:
        raw, pos = read_var_bytes(data, pos)
        return raw, 1, pos
    if ref == JSON:
        count = cols.length()
        texts = []
        for _ in range(count):
            text = normalize_json_text(js_to_str(cols.string()))
            texts.append(text.encode("utf-8"))
        return texts, count, pos
    if ref == DOC:
        guid = cols.string()
        opts, pos = read_any(data, pos)
        guid, normalized = normalize_doc_options(guid, opts)
        opts_any = bytearray()
        write_any(opts_any, normalized)
        return (guid, bytes(opts_any)), 1, pos
    raise UpdateFormatError(f"unknown content type {ref}")


def _read_structs(cols: Columns, data: bytes, budget: list[int]) -> tuple[list[Section], int]:
    pos = cols.rest_start
    client_of = cols.client
    left_clock = cols.left_clock
    right_clock = cols.right_clock
    next_info = cols.info
    next_string = cols.string
    next_sized = cols.string_sized
    next_length = cols.length
    sections: list[Section] = []
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
        structs: list[Struct] = []
        append = structs.append
        for _ in range(num_structs):
            info = next_info()
            ref = info & 0x1F
            if info == SKIP:
                length, pos = read_varuint(data, pos)
                append((SKIP, length))
                continue
            if ref == GC:
                append((GC, next_length()))
                continue
            origin: ID | None = None
            right_origin: ID | None = None
            parent: JsString | ID | None = None
            parent_sub: JsString | None = None
            if info & 0x80:
                origin = (client_of(), left_clock())
            if info & 0x40:
                right_origin = (client_of(), right_clock())
            if not info & 0xC0:
                if cols.parent_info() == 1:
                    parent = next_string()
                else:
                    parent = (client_of(), left_clock())
                if info & 0x20:
                    parent_sub = next_string()
            if ref == STRING:
                text, length = next_sized()
                append((STRING, length, origin, right_origin, parent, parent_sub, text))
            else:
                content, length, pos = _read_content(cols, data, pos, ref, budget)
                append((ref, length, origin, right_origin, parent, parent_sub, content))
        sections.append((client, clock, structs))
    return sections, pos


def read_delete_set_v2(data: bytes, pos: int) -> tuple[DeleteSet, int]:
    """Read a v2 delete set (``readDeleteSet`` with ``DSDecoderV2``)."""
    ds: DeleteSet = {}
    num_clients, pos = read_varuint(data, pos)
    if num_clients > len(data) - pos:
        raise UpdateFormatError("count exceeds the remaining data")
    for _ in range(num_clients):
        client, pos = read_varuint(data, pos)
        count, pos = read_varuint(data, pos)
        if count * 2 > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        if count:
            items = ds.setdefault(client, [])
            current = 0
            for _ in range(count):
                diff, pos = read_varuint(data, pos)
                length, pos = read_varuint(data, pos)
                current += diff
                items.append(current)
                items.append(length + 1)
                current += length + 1
    return ds, pos


def decode_v2(data: bytes) -> Update:
    """Decode a v2 update; malformed input raises :class:`UpdateFormatError`."""
    budget = [struct_budget(len(data))]
    try:
        cols = Columns(data)
        sections, pos = _read_structs(cols, data, budget)
        ds, _ = read_delete_set_v2(data, pos)
    except StopIteration as exc:
        raise UpdateFormatError("a column of the update ended early") from exc
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of data") from exc
    return Update(sections, ds)


def write_delete_set_v2(out: bytearray, ds: DeleteSet) -> None:
    """Write a delete set as ``writeDeleteSet`` with ``DSEncoderV2`` (clients descending)."""
    write_varuint(out, len(ds))
    for client in sorted(ds, reverse=True):
        items = ds[client]
        write_varuint(out, client)
        write_varuint(out, len(items) >> 1)
        current = 0
        for i in range(0, len(items), 2):
            clock = items[i]
            length = items[i + 1]
            if clock < current or length == 0:
                raise UpdateFormatError("delete set ranges overlap or are empty")
            write_varuint(out, clock - current)
            write_varuint(out, length - 1)
            current = clock + length


class _Writer:
    """The column encoders of ``UpdateEncoderV2`` (values are collected, encoded at the end)."""

    def __init__(self) -> None:
        self.clients: list[int] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.infos = bytearray()
        self.strings: list[JsString] = []
        self.string_lengths: list[int] = []
        self.lone = False
        self.parent_infos = bytearray()
        self.type_refs: list[int] = []
        self.lengths: list[int] = []
        self.keys = 0

    def string(self, s: JsString) -> None:
        self.strings.append(s)
        self.string_lengths.append(js_length(s))
        if type(s) is str:
            self.lone = True

    def key(self, s: JsString) -> None:
        self.keys += 1  # writeKey never reuses a key (its cache is disabled in Yjs)
        self.string(s)

    def content(self, frag: bytearray, ref: int, length: int, content: Any) -> None:
        if ref == DELETED:
            self.lengths.append(length)
        elif ref == ANY:
            self.lengths.append(length)
            frag += content
        elif ref == FORMAT:
            key, value = content
            self.key(key)
            write_any(frag, value)
        elif ref == TYPE:
            type_ref, name = content
            self.type_refs.append(type_ref)
            if name is not None:
                self.key(name)
        elif ref == EMBED:
            write_any(frag, content)
        elif ref == BINARY:
            write_var_bytes(frag, content)
        elif ref == JSON:
            self.lengths.append(len(content))
            for text in content:
                self.string(text)
        elif ref == DOC:
            guid, opts = content
            self.string(guid)
            frag += opts
        else:
            raise UpdateFormatError(f"unknown content type {ref}")

    def finish(self, rest: bytearray) -> bytes:
        out = bytearray([0])  # feature flag
        for column in (
            encode_int_diff_opt_rle(list(range(self.keys))),
            encode_uint_opt_rle(self.clients),
            encode_int_diff_opt_rle(self.left),
            encode_int_diff_opt_rle(self.right),
            encode_rle_u8(self.infos),
            encode_string_column(self.strings, self.string_lengths, self.lone),
            encode_rle_u8(self.parent_infos),
            encode_uint_opt_rle(self.type_refs),
            encode_uint_opt_rle(self.lengths),
        ):
            write_var_bytes(out, column)
        out += rest
        return bytes(out)


def encode_v2(update: Update) -> bytes:
    """Encode ``update`` in v2 exactly as Yjs's ``LazyStructWriter`` + ``UpdateEncoderV2``."""
    w = _Writer()
    clients = w.clients
    left = w.left
    right = w.right
    infos = w.infos
    strings = w.strings
    string_lengths = w.string_lengths
    lengths = w.lengths
    groups = writer_groups(update.sections)
    rest = bytearray()
    write_varuint(rest, len(groups))
    for client, clock, lists in groups:
        write_varuint(rest, sum(map(len, lists)))
        clients.append(client)
        frag = rest
        write_varuint(frag, clock)
        for structs in lists:
            for struct in structs:
                ref = struct[0]
                if ref == SKIP:
                    infos.append(SKIP)
                    write_varuint(frag, struct[1])
                    continue
                if ref == GC:
                    infos.append(GC)
                    lengths.append(struct[1])
                    continue
                _, length, origin, right_origin, parent, parent_sub, content = struct
                info = ref
                if origin is not None:
                    info |= 0x80
                    clients.append(origin[0])
                    left.append(origin[1])
                if right_origin is not None:
                    info |= 0x40
                    clients.append(right_origin[0])
                    right.append(right_origin[1])
                if parent_sub is not None:
                    info |= 0x20
                infos.append(info)
                if origin is None and right_origin is None:
                    if type(parent) is tuple:
                        w.parent_infos.append(0)
                        clients.append(parent[0])
                        left.append(parent[1])
                    elif parent is None:
                        raise UpdateFormatError("item without origin or parent")
                    else:
                        w.parent_infos.append(1)
                        w.string(parent)
                    if parent_sub is not None:
                        w.string(parent_sub)
                if ref == STRING:
                    strings.append(content)
                    string_lengths.append(length)
                    if type(content) is str:
                        w.lone = True
                else:
                    w.content(frag, ref, length, content)
    write_delete_set_v2(rest, update.delete_set)
    return w.finish(rest)
