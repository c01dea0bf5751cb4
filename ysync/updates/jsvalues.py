"""JavaScript values as Yjs encodes them: lib0 ``writeAny``/``readAny`` and ``JSON``.

Converting an update between v1 and v2 means decoding values and encoding them again, and Yjs
does that with JavaScript semantics, which this module reproduces so that the bytes match:

* numbers are doubles: an integral value up to 2**31-1 is written as a varint, one that a
  float32 holds exactly as float32, anything else as float64 (so a float64 ``2.0`` read from
  the wire becomes the varint ``2``);
* object keys follow JavaScript's own order (array-index keys first, ascending), a repeated key
  keeps its first place, and ``readAny`` drops a ``__proto__`` key (it sets the prototype);
* ``JSON.stringify`` formats numbers like ``Number.prototype.toString``, escapes lone
  surrogates, writes a ``Uint8Array`` as ``{"0":..}``, skips ``undefined`` object members and
  refuses a BigInt.

Python representation: ``undefined`` is :data:`UNDEFINED`, ``null`` is ``None``, a number is an
``int`` (exact, from a varint) or a ``float``, a BigInt is :class:`BigInt`, a string is ``str``,
an array ``list``, an object ``dict`` (already in JavaScript key order), a ``Uint8Array``
``bytes``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from ysync.errors import UpdateFormatError
from ysync.updates.lib0 import (
    decode_utf8,
    read_var_bytes,
    read_varint,
    read_varuint,
    write_var_bytes,
    write_varint,
    write_varuint,
)

#: Deepest nesting of arrays/objects accepted in one value (real documents stay far below).
MAX_DEPTH = 200

_BITS31 = 2**31 - 1
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_I64 = struct.Struct(">q")
# chr(): mypyc cannot hold a surrogate in a string literal
_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")


class _Undefined:
    """JavaScript ``undefined``."""

    _instance: ClassVar[_Undefined | None] = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@mypyc_attr(native_class=False)  # mypyc compiles no subclass of int otherwise
class BigInt(int):
    """A JavaScript BigInt (lib0 type 122), as opposed to a number."""


def _is_array_index(key: str) -> bool:
    return (
        key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) <= 4294967294
    )


def js_object(pairs: list[tuple[str, Any]], from_read_any: bool) -> dict[str, Any]:
    """Build an object as JavaScript would by assigning ``pairs`` in order."""
    obj: dict[str, Any] = {}
    index_keys = False
    for key, value in pairs:
        if from_read_any and key == "__proto__":
            continue  # `obj.__proto__ = v` sets the prototype: no own property
        obj[key] = value
        if not index_keys and key[:1].isdigit():
            index_keys = True
    if index_keys and any(_is_array_index(k) for k in obj):
        indices = sorted((k for k in obj if _is_array_index(k)), key=int)
        rest = [k for k in obj if not _is_array_index(k)]
        obj = {k: obj[k] for k in indices + rest}
    return obj


# --- lib0 any ----------------------------------------------------------------------------


def read_any(data: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
    """Decode one lib0 ``readAny`` value at ``pos``; return ``(value, next position)``."""
    if pos >= len(data):
        raise UpdateFormatError("unexpected end of data in a value")
    tag = data[pos]
    pos += 1
    if tag == 119:
        raw, pos = read_var_bytes(data, pos)
        return decode_utf8(raw), pos
    if tag == 125:
        magnitude, negative, pos = read_varint(data, pos)
        if negative:
            return (-magnitude if magnitude else -0.0), pos
        return magnitude, pos
    if tag == 118 or tag == 117:
        if depth >= MAX_DEPTH:
            raise UpdateFormatError("values nested too deeply")
        count, pos = read_varuint(data, pos)
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        if tag == 117:
            items = []
            for _ in range(count):
                value, pos = read_any(data, pos, depth + 1)
                items.append(value)
            return items, pos
        pairs = []
        for _ in range(count):
            raw, pos = read_var_bytes(data, pos)
            value, pos = read_any(data, pos, depth + 1)
            pairs.append((decode_utf8(raw), value))
        return js_object(pairs, True), pos
    if tag == 126:
        return None, pos
    if tag == 120:
        return True, pos
    if tag == 121:
        return False, pos
    if tag == 127:
        return UNDEFINED, pos
    if tag == 124 or tag == 123 or tag == 122:
        size = 4 if tag == 124 else 8
        if pos + size > len(data):
            raise UpdateFormatError("unexpected end of data in a number")
        if tag == 124:
            return _F32.unpack_from(data, pos)[0], pos + 4
        if tag == 123:
            return _F64.unpack_from(data, pos)[0], pos + 8
        return BigInt(_I64.unpack_from(data, pos)[0]), pos + 8
    if tag == 116:
        return read_var_bytes(data, pos)
    raise UpdateFormatError(f"unknown value type {tag}")


def skip_any(data: bytes, pos: int, depth: int = 0) -> int:
    """Check one ``readAny`` value at ``pos`` as :func:`read_any` would; return its end."""
    if pos >= len(data):
        raise UpdateFormatError("unexpected end of data in a value")
    tag = data[pos]
    pos += 1
    if tag == 119 or tag == 116:
        raw, pos = read_var_bytes(data, pos)
        if tag == 119 and not raw.isascii():
            decode_utf8(raw)
        return pos
    if tag == 125:
        return read_varint(data, pos)[2]
    if tag == 126 or tag == 120 or tag == 121 or tag == 127:
        return pos
    if tag == 124 or tag == 123 or tag == 122:
        pos += 4 if tag == 124 else 8
        if pos > len(data):
            raise UpdateFormatError("unexpected end of data in a number")
        return pos
    if tag == 118 or tag == 117:
        if depth >= MAX_DEPTH:
            raise UpdateFormatError("values nested too deeply")
        count, pos = read_varuint(data, pos)
        if count > len(data) - pos:
            raise UpdateFormatError("count exceeds the remaining data")
        for _ in range(count):
            if tag == 118:
                raw, pos = read_var_bytes(data, pos)
                if not raw.isascii():
                    decode_utf8(raw)
            pos = skip_any(data, pos, depth + 1)
        return pos
    raise UpdateFormatError(f"unknown value type {tag}")


def _write_number(out: bytearray, num: int | float) -> None:
    if type(num) is int:
        if -_BITS31 <= num <= _BITS31:
            out.append(125)
            write_varint(out, abs(num), num < 0)
            return
    value = float(num)
    if value.is_integer() and abs(value) <= _BITS31:
        out.append(125)
        write_varint(out, int(abs(value)), math.copysign(1.0, value) < 0)
        return
    try:
        is_f32 = _F32.unpack(_F32.pack(value))[0] == value
    except OverflowError:
        is_f32 = False
    if is_f32:
        out.append(124)
        out += _F32.pack(value)
    else:
        out.append(123)
        out += _F64.pack(value)


def _write_string(out: bytearray, text: str) -> None:
    try:
        write_var_bytes(out, text.encode("utf-8"))
    except UnicodeEncodeError:
        write_var_bytes(out, _SURROGATE.sub("\ufffd", text).encode("utf-8"))


def write_any(out: bytearray, value: Any) -> None:
    """Append ``value`` as lib0 ``writeAny`` does."""
    kind = type(value)
    if kind is str:
        out.append(119)
        _write_string(out, value)
    elif kind is int or kind is float:
        _write_number(out, value)
    elif value is None:
        out.append(126)
    elif kind is bool:
        out.append(120 if value else 121)
    elif kind is dict:
        out.append(118)
        write_varuint(out, len(value))
        for key, item in value.items():
            _write_string(out, key)
            write_any(out, item)
    elif kind is list:
        out.append(117)
        write_varuint(out, len(value))
        for item in value:
            write_any(out, item)
    elif kind is bytes:
        out.append(116)
        write_var_bytes(out, value)
    elif kind is BigInt:
        out.append(122)
        out += _I64.pack(value)
    elif value is UNDEFINED:
        out.append(127)
    else:
        raise TypeError(f"not a JavaScript value: {kind.__name__}")


def canonical_any(data: bytes, pos: int, count: int) -> tuple[bytes, int]:
    """Read ``count`` values and return them re-encoded as Yjs would write them, and the end."""
    values = []
    for _ in range(count):
        value, pos = read_any(data, pos)
        values.append(value)
    out = bytearray()
    for value in values:
        write_any(out, value)
    return bytes(out), pos


# --- JSON --------------------------------------------------------------------------------


def js_number_to_string(num: int | float) -> str:
    """``Number.prototype.toString()`` of ``num``."""
    if type(num) is int and abs(num) < 10**21:
        return str(num)
    num = float(num)
    if num != num:
        return "NaN"
    if num == 0:
        return "0"
    if math.isinf(num):
        return "Infinity" if num > 0 else "-Infinity"
    sign = "-" if num < 0 else ""
    mantissa, _, exp = repr(abs(num)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    e = point - 1
    exp_text = ("e+" if e >= 0 else "e-") + str(abs(e))
    if k == 1:
        return sign + digits + exp_text
    return sign + digits[0] + "." + digits[1:] + exp_text


def _quote(text: str) -> str:
    quoted: str = json.encoder.encode_basestring(text)
    if _SURROGATE.search(quoted) is None:
        return quoted
    # re-pair halves that Python kept apart, then escape what stays alone (well-formed JSON)
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    quoted = json.encoder.encode_basestring(text)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _stringify(value: Any, depth: int) -> str | None:
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is int or kind is float:
        return js_number_to_string(value) if math.isfinite(value) else "null"
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if value is UNDEFINED:
        return None
    if depth >= MAX_DEPTH:
        raise UpdateFormatError("values nested too deeply")
    if kind is list:
        return "[" + ",".join(_stringify(v, depth + 1) or "null" for v in value) + "]"
    if kind is dict:
        members = []
        for key, item in value.items():
            text = _stringify(item, depth + 1)
            if text is not None:
                members.append(_quote(key) + ":" + text)
        return "{" + ",".join(members) + "}"
    if kind is bytes:
        return "{" + ",".join(f'"{i}":{b}' for i, b in enumerate(value)) + "}"
    if kind is BigInt:
        raise UpdateFormatError("a BigInt cannot be written as JSON (Yjs fails likewise)")
    raise TypeError(f"not a JavaScript value: {kind.__name__}")


def json_stringify(value: Any) -> str | None:
    """``JSON.stringify(value)``; ``None`` where JavaScript returns ``undefined``."""
    return _stringify(value, 0)


def _reject_constant(name: str) -> Any:
    raise UpdateFormatError(f"invalid JSON constant {name}")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return js_object(pairs, False)


def json_parse(text: str) -> Any:
    """``JSON.parse(text)``; invalid JSON raises :class:`UpdateFormatError`."""
    try:
        value = json.loads(
            text,
            parse_int=float,
            parse_constant=_reject_constant,
            object_pairs_hook=_json_object,
        )
    except (ValueError, RecursionError) as exc:
        raise UpdateFormatError("invalid JSON in an update") from exc
    if type(value) is list or type(value) is dict:
        _check_depth(value)
    return value


def _check_depth(value: list[Any] | dict[str, Any]) -> None:
    # the same bound as read_any, so that what we write we can read
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UpdateFormatError("values nested too deeply")
        for item in container.values() if type(container) is dict else container:
            if type(item) is list or type(item) is dict:
                stack.append((item, depth + 1))


def normalize_json_text(text: str) -> str:
    """``JSON.stringify(JSON.parse(text))`` (``'undefined'`` stays), as ContentJSON does."""
    if text == "undefined":
        return text
    result = json_stringify(json_parse(text))
    assert result is not None  # JSON.parse never yields undefined
    return result


def _truthy(value: Any) -> bool:
    if value is UNDEFINED or value is None:
        return False
    if type(value) is float:
        return value == value and value != 0
    if type(value) in (bytes, list, dict):
        return True
    return bool(value)


def normalize_doc_options(guid: str | bytes, opts: Any) -> tuple[str | bytes, dict[str, Any]]:
    """The guid and options a subdocument is written with after Yjs read it (ContentDoc).

    Yjs builds a ``Doc`` from the options it read and writes back only ``gc: false``,
    ``autoLoad: true`` and ``meta`` when they apply.
    """
    if opts is None or opts is UNDEFINED:
        raise UpdateFormatError("subdocument options are null (Yjs fails likewise)")
    result: dict[str, Any] = {}
    if type(opts) is not dict:
        return guid, result
    if "guid" in opts:
        if type(opts["guid"]) is not str:
            raise UpdateFormatError("subdocument options hold a guid that is not a string")
        guid = opts["guid"].encode("utf-8")
    if "gc" in opts and opts["gc"] is not UNDEFINED and not _truthy(opts["gc"]):
        result["gc"] = False
    if _truthy(opts.get("autoLoad")):
        result["autoLoad"] = True
    meta = opts.get("meta", UNDEFINED)
    if meta is not UNDEFINED and meta is not None:
        result["meta"] = meta
    return guid, result
