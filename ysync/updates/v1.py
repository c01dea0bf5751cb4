"""Reading and writing Yjs updates in the v1 encoding (``UpdateDecoderV1``/``UpdateEncoderV1``).

v1 is one stream of variable integers and length-prefixed strings; every struct takes at least
two bytes, so counts are checked against the bytes that remain.
"""

from __future__ import annotations

from typing import Any

from ysync.errors import UpdateFormatError
from ysync.updates.jsvalues import (
    canonical_any,
    json_parse,
    json_stringify,
    normalize_doc_options,
    normalize_json_text,
    read_any,
    write_any,
)
from ysync.updates.lib0 import (
    VARUINT,
    JsString,
    decode_utf8,
    js_to_utf8,
    read_id,
    read_var_bytes,
    read_varuint,
    utf8_utf16_length,
    varuint_bytes,
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
    writer_groups,
)


def _read_string(data: bytes, pos: int) -> tuple[JsString, int]:
    raw, pos = read_var_bytes(data, pos)
    if not raw.isascii():
        decode_utf8(raw)
    return raw, pos


def _read_content(data: bytes, pos: int, ref: int) -> tuple[Any, int, int]:
    """Read an Item's content; return ``(content, length, next position)``."""
    if ref == DELETED:
        length, pos = read_varuint(data, pos)
        return None, length, pos
    if ref == ANY:
        count, pos = read_varuint(data, pos)
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        encoded, pos = canonical_any(data, pos, count)
        return encoded, count, pos
    if ref == BINARY:
        raw, pos = read_var_bytes(data, pos)
        return raw, 1, pos
    if ref == EMBED:
        raw, pos = read_var_bytes(data, pos)
        return json_parse(decode_utf8(raw)), 1, pos
    if ref == FORMAT:
        key, pos = _read_string(data, pos)
        raw, pos = read_var_bytes(data, pos)
        return (key, json_parse(decode_utf8(raw))), 1, pos
    if ref == TYPE:
        type_ref, pos = read_varuint(data, pos)
        if type_ref >= TYPE_REF_COUNT:
            raise UpdateFormatError(f"unknown type reference {type_ref}")
        name = None
        if type_ref == XML_ELEMENT or type_ref == XML_HOOK:
            name, pos = _read_string(data, pos)
        return (type_ref, name), 1, pos
    if ref == JSON:
        count, pos = read_varuint(data, pos)
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        texts = []
        for _ in range(count):
            raw, pos = read_var_bytes(data, pos)
            texts.append(normalize_json_text(decode_utf8(raw)).encode("utf-8"))
        return texts, count, pos
    if ref == DOC:
        guid, pos = _read_string(data, pos)
        opts, pos = read_any(data, pos)
        guid, normalized = normalize_doc_options(guid, opts)
        opts_any = bytearray()
        write_any(opts_any, normalized)
        return (guid, bytes(opts_any)), 1, pos
    raise UpdateFormatError(f"unknown content type {ref}")


def _read_structs(data: bytes, pos: int) -> tuple[list[Section], int]:
    sections: list[Section] = []
    num_sections, pos = read_varuint(data, pos)
    if num_sections > len(data) - pos:
        raise UpdateFormatError("count exceeds the remaining data")
    for _ in range(num_sections):
        num_structs, pos = read_varuint(data, pos)
        client, pos = read_varuint(data, pos)
        clock, pos = read_varuint(data, pos)
        if num_structs > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        structs: list[Struct] = []
        append = structs.append
        for _ in range(num_structs):
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if info == SKIP or ref == GC:
                b = data[pos]
                if b < 0x80:
                    length = b
                    pos += 1
                else:
                    length, pos = read_varuint(data, pos)
                append((SKIP if info == SKIP else GC, length))
                continue
            origin: ID | None = None
            right_origin: ID | None = None
            parent: JsString | ID | None = None
            parent_sub: JsString | None = None
            if info & 0x80:
                origin, pos = read_id(data, pos)
            if info & 0x40:
                right_origin, pos = read_id(data, pos)
            if not info & 0xC0:
                parent_info, pos = read_varuint(data, pos)
                if parent_info == 1:
                    parent, pos = _read_string(data, pos)
                else:
                    parent, pos = read_id(data, pos)
                if info & 0x20:
                    parent_sub, pos = _read_string(data, pos)
            if ref == STRING:
                b = data[pos]
                if b < 0x80:
                    end = pos + 1 + b
                    pos += 1
                else:
                    n, pos = read_varuint(data, pos)
                    end = pos + n
                if end > len(data):
                    raise UpdateFormatError("length exceeds the remaining data")
                text = data[pos:end]
                pos = end
                length = len(text) if text.isascii() else utf8_utf16_length(text)
                append((STRING, length, origin, right_origin, parent, parent_sub, text))
            else:
                content, length, pos = _read_content(data, pos, ref)
                append((ref, length, origin, right_origin, parent, parent_sub, content))
        sections.append((client, clock, structs))
    return sections, pos


def read_delete_set_v1(data: bytes, pos: int) -> tuple[DeleteSet, int]:
    """Read a v1 delete set (``readDeleteSet`` with ``DSDecoderV1``)."""
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
            for _ in range(count):
                clock, pos = read_varuint(data, pos)
                length, pos = read_varuint(data, pos)
                items.append(clock)
                items.append(length)
    return ds, pos


def decode_v1(data: bytes) -> Update:
    """Decode a v1 update; malformed input raises :class:`UpdateFormatError`."""
    try:
        sections, pos = _read_structs(data, 0)
        ds, _ = read_delete_set_v1(data, pos)
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of data") from exc
    return Update(sections, ds)


def _write_string(out: bytearray, s: JsString) -> None:
    write_var_bytes(out, js_to_utf8(s))


def _write_json(out: bytearray, value: Any) -> None:
    text = json_stringify(value)
    if text is None:
        raise UpdateFormatError("value has no JSON form (Yjs fails likewise)")
    write_var_bytes(out, js_to_utf8(text))


def _write_content(out: bytearray, ref: int, length: int, content: Any) -> None:
    if ref == DELETED:
        write_varuint(out, length)
    elif ref == ANY:
        write_varuint(out, length)
        out += content
    elif ref == BINARY:
        write_var_bytes(out, content)
    elif ref == EMBED:
        _write_json(out, content)
    elif ref == FORMAT:
        key, value = content
        _write_string(out, key)
        _write_json(out, value)
    elif ref == TYPE:
        type_ref, name = content
        out.append(type_ref)
        if name is not None:
            _write_string(out, name)
    elif ref == STRING:
        _write_string(out, content)
    elif ref == JSON:
        write_varuint(out, len(content))
        for text in content:
            write_var_bytes(out, text)
    elif ref == DOC:
        guid, opts = content
        _write_string(out, guid)
        out += opts
    else:
        raise UpdateFormatError(f"unknown content type {ref}")


def write_delete_set_v1(out: bytearray, ds: DeleteSet) -> None:
    """Write a delete set as ``writeDeleteSet`` with ``DSEncoderV1`` (clients descending)."""
    write_varuint(out, len(ds))
    for client in sorted(ds, reverse=True):
        items = ds[client]
        write_varuint(out, client)
        write_varuint(out, len(items) >> 1)
        for value in items:
            write_varuint(out, value)


def encode_v1(update: Update) -> bytes:
    """Encode ``update`` in v1 exactly as Yjs's ``LazyStructWriter`` + ``UpdateEncoderV1``."""
    out = bytearray()
    append = out.append
    small = VARUINT
    encode = varuint_bytes
    clients: dict[int, bytes] = {}  # a few clients, written again and again
    groups = writer_groups(update.sections)
    write_varuint(out, len(groups))
    for client, clock, lists in groups:
        write_varuint(out, sum(map(len, lists)))
        write_varuint(out, client)
        write_varuint(out, clock)
        for structs in lists:
            for struct in structs:
                ref = struct[0]
                if ref == GC or ref == SKIP:
                    append(ref)
                    write_varuint(out, struct[1])
                    continue
                _, length, origin, right_origin, parent, parent_sub, content = struct
                info = ref
                if origin is not None:
                    info |= 0x80
                if right_origin is not None:
                    info |= 0x40
                if parent_sub is not None:
                    info |= 0x20
                append(info)
                if origin is not None:
                    c, k = origin
                    e = clients.get(c)
                    if e is None:
                        e = clients[c] = encode(c)
                    out += e
                    if k < 0x4000:
                        out += small[k]
                    elif k < 0x200000:
                        out += bytes((0x80 | (k & 0x7F), 0x80 | ((k >> 7) & 0x7F), k >> 14))
                    else:
                        out += encode(k)
                if right_origin is not None:
                    c, k = right_origin
                    e = clients.get(c)
                    if e is None:
                        e = clients[c] = encode(c)
                    out += e
                    if k < 0x4000:
                        out += small[k]
                    elif k < 0x200000:
                        out += bytes((0x80 | (k & 0x7F), 0x80 | ((k >> 7) & 0x7F), k >> 14))
                    else:
                        out += encode(k)
                elif origin is None:
                    if type(parent) is tuple:
                        append(0)
                        write_varuint(out, parent[0])
                        write_varuint(out, parent[1])
                    elif parent is None:
                        raise UpdateFormatError("item without origin or parent")
                    else:
                        append(1)
                        _write_string(out, parent)
                    if parent_sub is not None:
                        _write_string(out, parent_sub)
                if ref == STRING and type(content) is bytes:
                    n = len(content)
                    if n < 0x80:
                        append(n)
                    else:
                        out += encode(n)
                    out += content
                else:
                    _write_content(out, ref, length, content)
    write_delete_set_v1(out, update.delete_set)
    return bytes(out)
