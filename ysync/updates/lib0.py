"""The byte-level encodings of lib0 that Yjs updates are built from.

Variable-length integers, the run-length encoded columns of the v2 update format
(``RleEncoder``, ``UintOptRleEncoder``, ``IntDiffOptRleEncoder``, ``StringEncoder`` in
lib0/encoding.js) and JavaScript string handling (UTF-16 lengths, lone surrogates).

Column decoders return C-level iterators (``itertools.chain`` over ``repeat``/``range`` runs)
so that reading one value costs one ``next()`` call. Every decoder raises
:class:`~ysync.errors.UpdateFormatError` on malformed input; counts are never trusted to
allocate memory.

Strings of a document are carried as :data:`JsString`: ``bytes`` holding valid UTF-8 (the usual
case, cheap to slice and copy) or, rarely, a ``str`` for a JavaScript string that contains a
lone UTF-16 surrogate (possible when a v2 string column is cut between the two halves of a
surrogate pair). Lone surrogates become U+FFFD when written as UTF-8, as ``TextEncoder`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, groupby, repeat
from typing import cast

from ysync.errors import UpdateFormatError

#: Largest integer a JavaScript number holds exactly; lib0 refuses larger variable integers.
MAX_SAFE_INTEGER = 2**53 - 1

#: A JavaScript string: valid UTF-8 ``bytes``, or a ``str`` holding a lone surrogate.
JsString = bytes | str
#: What the public functions take as an update: any bytes-like object.
BytesLike = bytes | bytearray | memoryview

# chr(): mypyc cannot hold a surrogate in a string literal
_LONE_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
#: ``bytes.translate`` table argument that deletes every byte except UTF-8 4-byte lead bytes.
_ALL_BUT_ASTRAL_LEADS = bytes(range(0xF0)) + bytes(range(0xF5, 0x100))


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """Read an unsigned lib0 varint at ``pos``; return ``(value, next position)``.

    Reading past the end raises ``IndexError``; the decoders translate it into
    :class:`UpdateFormatError` (checking every byte here would cost a third of the time).
    """
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    b1 = data[pos + 1]
    if b1 < 0x80:
        return (b & 0x7F) | (b1 << 7), pos + 2
    b2 = data[pos + 2]
    if b2 < 0x80:
        return (b & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14), pos + 3
    return _read_long_varuint(data, pos)


def read_id(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """Read a v1 ID (client and clock varints); return ``((client, clock), next position)``."""
    b = data[pos]
    if b < 0x80:
        client = b
        pos += 1
    else:
        b1 = data[pos + 1]
        if b1 < 0x80:
            client = (b & 0x7F) | (b1 << 7)
            pos += 2
        else:
            b2 = data[pos + 2]
            if b2 < 0x80:
                client = (b & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14)
                pos += 3
            else:
                client, pos = _read_long_varuint(data, pos)
    b = data[pos]
    if b < 0x80:
        return (client, b), pos + 1
    b1 = data[pos + 1]
    if b1 < 0x80:
        return (client, (b & 0x7F) | (b1 << 7)), pos + 2
    b2 = data[pos + 2]
    if b2 < 0x80:
        return (client, (b & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14)), pos + 3
    clock, pos = _read_long_varuint(data, pos)
    return (client, clock), pos


def _read_long_varuint(data: bytes, pos: int) -> tuple[int, int]:
    end = len(data)
    num = 0
    shift = 0
    while pos < end:
        b = data[pos]
        pos += 1
        num |= (b & 0x7F) << shift
        if b < 0x80:
            if num > MAX_SAFE_INTEGER:
                raise UpdateFormatError("variable integer out of range")
            return num, pos
        shift += 7
        if shift > 56:
            raise UpdateFormatError("variable integer out of range")
    raise UpdateFormatError("unexpected end of data in a variable integer")


def read_varint(data: bytes, pos: int) -> tuple[int, bool, int]:
    """Read a signed lib0 varint; return ``(magnitude, negative, next position)``.

    The sign is returned apart so that negative zero (lib0's run marker) stays visible.
    """
    end = len(data)
    if pos >= end:
        raise UpdateFormatError("unexpected end of data in a variable integer")
    b = data[pos]
    pos += 1
    num = b & 0x3F
    negative = (b & 0x40) != 0
    if b < 0x80:
        return num, negative, pos
    shift = 6
    while pos < end:
        b = data[pos]
        pos += 1
        num |= (b & 0x7F) << shift
        if b < 0x80:
            if num > MAX_SAFE_INTEGER:
                raise UpdateFormatError("variable integer out of range")
            return num, negative, pos
        shift += 7
        if shift > 55:
            raise UpdateFormatError("variable integer out of range")
    raise UpdateFormatError("unexpected end of data in a variable integer")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a length-prefixed byte array (``readVarUint8Array``)."""
    n, pos = read_varuint(data, pos)
    end = pos + n
    if end > len(data):
        raise UpdateFormatError("length exceeds the remaining data")
    return data[pos:end], end


def _encode_varuint(num: int) -> bytes:
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def _encode_varint(magnitude: int, negative: bool) -> bytes:
    first = (magnitude & 0x3F) | (0x40 if negative else 0)
    if magnitude > 0x3F:
        first |= 0x80
    out = bytearray((first,))
    magnitude >>= 6
    while magnitude > 0:
        out.append((0x80 if magnitude > 0x7F else 0) | (magnitude & 0x7F))
        magnitude >>= 7
    return bytes(out)


#: Encoded unsigned varints of 0 .. 2**14-1 (one or two bytes), for the hot loops.
VARUINT = [_encode_varuint(n) for n in range(1 << 14)]
#: Encoded signed varints of 0 .. 2**13-1 and of their negatives (-0 included).
VARINT = [_encode_varint(n, False) for n in range(1 << 13)]
NEG_VARINT = [_encode_varint(n, True) for n in range(1 << 13)]


def varuint_bytes(num: int) -> bytes:
    """``num`` (>= 0) as an unsigned lib0 varint."""
    if num < 0x4000:
        return VARUINT[num]
    if num < 0x200000:
        return bytes((0x80 | (num & 0x7F), 0x80 | ((num >> 7) & 0x7F), num >> 14))
    return _encode_varuint(num)


def varint_bytes(value: int) -> bytes:
    """``value`` as a signed lib0 varint (use :func:`write_varint` for negative zero)."""
    if value >= 0:
        if value < 0x2000:
            return VARINT[value]
        sign = 0
    else:
        value = -value
        if value < 0x2000:
            return NEG_VARINT[value]
        sign = 0x40
    if value < 0x100000:
        return bytes((0x80 | sign | (value & 0x3F), 0x80 | ((value >> 6) & 0x7F), value >> 13))
    return _encode_varint(value, sign != 0)


def write_varuint(out: bytearray, num: int) -> None:
    """Append ``num`` (>= 0) as an unsigned lib0 varint."""
    out += VARUINT[num] if num < 0x4000 else varuint_bytes(num)


def write_varint(out: bytearray, magnitude: int, negative: bool) -> None:
    """Append a signed lib0 varint given as magnitude and sign (``negative`` with 0 is -0)."""
    if magnitude < 0x2000:
        out += NEG_VARINT[magnitude] if negative else VARINT[magnitude]
    else:
        out += _encode_varint(magnitude, negative)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append a length-prefixed byte array (``writeVarUint8Array``)."""
    write_varuint(out, len(data))
    out += data


# --- strings -----------------------------------------------------------------------------


def decode_utf8(data: bytes) -> str:
    """Decode like lib0 (``TextDecoder`` with ``fatal: true``): invalid UTF-8 is an error."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpdateFormatError("string is not valid UTF-8") from exc


def utf8_utf16_length(data: bytes) -> int:
    """The JavaScript ``length`` (UTF-16 code units) of valid UTF-8 ``data``; validates it."""
    if data.isascii():
        return len(data)
    return len(decode_utf8(data)) + len(data.translate(None, _ALL_BUT_ASTRAL_LEADS))


def js_length(s: JsString) -> int:
    """The JavaScript ``length`` of a :data:`JsString`."""
    if isinstance(s, bytes):
        return utf8_utf16_length(s)
    return len(s.encode("utf-16-le", "surrogatepass")) >> 1


def js_to_utf8(s: JsString) -> bytes:
    """What lib0 ``writeVarString`` emits for ``s``: UTF-8, lone surrogates as U+FFFD."""
    if isinstance(s, bytes):
        return s
    return _LONE_SURROGATE.sub("\ufffd", s).encode("utf-8")


def js_to_str(s: JsString) -> str:
    """``s`` as a Python ``str`` (lone surrogates kept as surrogate code points)."""
    return s.decode("utf-8") if isinstance(s, bytes) else s


def js_from_utf16(units: bytes) -> JsString:
    """A :data:`JsString` from UTF-16-LE code units (which may hold lone surrogates)."""
    try:
        return units.decode("utf-16-le").encode("utf-8")
    except UnicodeDecodeError:
        return units.decode("utf-16-le", "surrogatepass")


def join_js_strings(pieces: list[JsString]) -> bytes:
    """UTF-8 of the concatenation of JavaScript strings (halves of a pair may meet again)."""
    units = b"".join(
        p.decode("utf-8").encode("utf-16-le")
        if isinstance(p, bytes)
        else p.encode("utf-16-le", "surrogatepass")
        for p in pieces
    )
    return units.decode("utf-16-le", "replace").encode("utf-8")


class StringColumn:
    """Reads the v2 string column (``StringDecoder``): one UTF-8 string cut by UTF-16 lengths.

    ``read_sized()`` returns the next string and its UTF-16 length, ``read()`` the string,
    ``skip()`` only the length. Pieces are sliced from the decoded text by code point; only a
    piece that holds an astral character (two UTF-16 units) takes the slower way through UTF-16.
    (The readers are closures: this is the hottest call of v2 decoding.)
    """

    read_sized: Callable[[], tuple[JsString, int]]
    read: Callable[[], JsString]
    skip: Callable[[], int]

    def __init__(self, column: bytes) -> None:
        raw, start = read_var_bytes(column, 0)
        lengths = uint_opt_rle_column(column[start:]).__next__
        text = ""
        astral: list[int] = []  # UTF-16 offsets where astral characters start
        total = len(raw)
        if not raw.isascii():
            text = decode_utf8(raw)
            astral = [m.start() + i for i, m in enumerate(_ASTRAL.finditer(text))]
            total = len(text) + len(astral)
        astral.append(total + 1)  # sentinel
        pos = 0
        next_astral = 0  # index into astral of the first one at or after pos
        units = b""

        def advance() -> tuple[int, int]:
            nonlocal pos
            try:
                length = lengths()
            except StopIteration:
                raise UpdateFormatError("string column exhausted") from None
            begin = pos
            pos += length
            if pos > total:
                raise UpdateFormatError("string length exceeds the string column")
            return begin, length

        def read_ascii() -> tuple[JsString, int]:
            nonlocal pos
            try:
                length = lengths()
            except StopIteration:
                raise UpdateFormatError("string column exhausted") from None
            begin = pos
            pos += length
            if pos > total:
                raise UpdateFormatError("string length exceeds the string column")
            return raw[begin:pos], length

        def read_text() -> tuple[JsString, int]:
            nonlocal next_astral, units
            begin, length = advance()
            end = begin + length
            k = next_astral
            while astral[k] < begin:
                k += 1
            next_astral = k
            if astral[k] >= end and (k == 0 or astral[k - 1] != begin - 1):
                # no astral character inside and not starting in the middle of one
                return text[begin - k : end - k].encode("utf-8"), length
            if not units:
                units = text.encode("utf-16-le")
            return js_from_utf16(units[begin * 2 : end * 2]), length

        self.read_sized = read_sized = read_ascii if raw.isascii() else read_text
        self.read = lambda: read_sized()[0]
        self.skip = lambda: advance()[1]


def encode_string_column(pieces: list[JsString], lengths: list[int], lone: bool) -> bytes:
    """Encode the v2 string column; ``lone`` says whether some piece is a ``str``."""
    joined = join_js_strings(pieces) if lone else b"".join(cast(list[bytes], pieces))
    out = bytearray()
    write_varuint(out, len(joined))
    out += joined
    out += encode_uint_opt_rle(lengths)
    return bytes(out)


# --- run-length encoded columns ----------------------------------------------------------


def rle_u8_column(column: bytes) -> Iterator[int]:
    """Values of an ``RleEncoder(writeUint8)`` column; the last value repeats forever."""
    try:
        return _rle_u8_column(column)
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of a column") from exc


def _rle_u8_column(column: bytes) -> Iterator[int]:
    """Values of an ``RleEncoder(writeUint8)`` column; the last value repeats forever."""
    runs: list[Iterable[int]] = []
    pos = 0
    end = len(column) - 1
    while pos < end:
        value = column[pos]
        b = column[pos + 1]
        if b < 0x80:
            pos += 2
            count = b
        else:
            count, pos = read_varuint(column, pos + 1)
        runs.append(repeat(value, count + 1))
    if pos == end:
        runs.append(repeat(column[pos]))
    return chain.from_iterable(runs)


def uint_opt_rle_column(column: bytes) -> Iterator[int]:
    """Values of a ``UintOptRleEncoder`` column."""
    try:
        return _uint_opt_rle_column(column)
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of a column") from exc


def _uint_opt_rle_column(column: bytes) -> Iterator[int]:
    """Values of a ``UintOptRleEncoder`` column."""
    runs: list[Iterable[int]] = []
    singles: list[int] = []
    pos = 0
    end = len(column)
    while pos < end:
        b = column[pos]
        if b < 0x80:
            pos += 1
            if not b & 0x40:
                singles.append(b)
                continue
            value = b & 0x3F
            negative = True
        elif column[pos + 1] < 0x80:  # two bytes, the usual case of a length or a client
            value = (b & 0x3F) | (column[pos + 1] << 6)
            negative = (b & 0x40) != 0
            pos += 2
            if not negative:
                singles.append(value)
                continue
        else:
            value, negative, pos = read_varint(column, pos)
            if not negative:
                singles.append(value)
                continue
        count, pos = read_varuint(column, pos)
        if singles:
            runs.append(singles)
            singles = []
        runs.append(repeat(value, count + 2))
    if singles:
        runs.append(singles)
    return chain.from_iterable(runs)


def int_diff_opt_rle_column(column: bytes) -> Iterator[int]:
    """Values of an ``IntDiffOptRleEncoder`` column; all must lie in 0..2**53-1."""
    try:
        return _int_diff_opt_rle_column(column)
    except IndexError as exc:
        raise UpdateFormatError("unexpected end of a column") from exc


def _int_diff_opt_rle_column(column: bytes) -> Iterator[int]:
    """Values of an ``IntDiffOptRleEncoder`` column; all must lie in 0..2**53-1."""
    runs: list[Iterable[int]] = []
    singles: list[int] = []
    pos = 0
    end = len(column)
    state = 0
    low = high = 0
    while pos < end:
        b = column[pos]
        if b < 0x80:
            pos += 1
            encoded = -(b & 0x3F) if b & 0x40 else b
        else:
            b1 = column[pos + 1]
            if b1 < 0x80:
                pos += 2
                encoded = (b & 0x3F) | (b1 << 6)
            elif column[pos + 2] < 0x80:
                encoded = (b & 0x3F) | ((b1 & 0x7F) << 6) | (column[pos + 2] << 13)
                pos += 3
            else:
                encoded, _, pos = read_varint(column, pos)
            if b & 0x40:
                encoded = -encoded
        diff = encoded >> 1
        if not encoded & 1:
            state += diff
            singles.append(state)
            if state < low:
                low = state
            elif state > high:
                high = state
            continue
        count, pos = read_varuint(column, pos)
        count += 2
        last = state + diff * count
        for bound in (state + diff, last):
            if bound < low:
                low = bound
            elif bound > high:
                high = bound
        if singles:
            runs.append(singles)
            singles = []
        if diff == 0:
            runs.append(repeat(state, count))
        else:
            runs.append(range(state + diff, last + (1 if diff > 0 else -1), diff))
        state = last
    if low < 0 or high > MAX_SAFE_INTEGER:
        raise UpdateFormatError("clock or key number out of range")
    if singles:
        runs.append(singles)
    return chain.from_iterable(runs)


def encode_rle_u8(values: bytes | bytearray) -> bytes:
    """Encode like ``RleEncoder(writeUint8)``: the count of the last run is left out."""
    out = bytearray()
    pending = -1
    for value, group in groupby(values):
        if pending >= 0:
            out += VARUINT[pending] if pending < 0x4000 else varuint_bytes(pending)
        out.append(value)
        pending = len(list(group)) - 1
    return bytes(out)


def encode_uint_opt_rle(values: Iterable[int]) -> bytes:
    """Encode like ``UintOptRleEncoder`` (a run is marked by a negative value)."""
    out = bytearray()
    positive = VARINT
    negative = NEG_VARINT
    current = -1
    count = 0
    for value in values:
        if value == current:
            count += 1
            continue
        if count == 1:
            out += positive[current] if current < 0x2000 else _encode_varint(current, False)
        elif count:
            out += negative[current] if current < 0x2000 else _encode_varint(current, True)
            out += VARUINT[count - 2] if count < 0x4002 else varuint_bytes(count - 2)
        current = value
        count = 1
    if count == 1:
        out += positive[current] if current < 0x2000 else _encode_varint(current, False)
    elif count:
        out += negative[current] if current < 0x2000 else _encode_varint(current, True)
        out += varuint_bytes(count - 2)
    return bytes(out)


def encode_int_diff_opt_rle(values: Iterable[int]) -> bytes:
    """Encode like ``IntDiffOptRleEncoder`` (differences, odd when a count follows)."""
    out = bytearray()
    positive = VARINT
    negative = NEG_VARINT
    previous = 0
    diff = 0
    count = 0
    for value in values:
        d = value - previous
        previous = value
        if d == diff and count:
            count += 1
            continue
        if count:
            e = diff * 2 + (count > 1)
            if -0x2000 < e < 0x2000:
                out += positive[e] if e >= 0 else negative[-e]
            else:
                out += varint_bytes(e)
            if count > 1:
                out += VARUINT[count - 2] if count < 0x4002 else varuint_bytes(count - 2)
        diff = d
        count = 1
    if count:
        out += varint_bytes(diff * 2 + (count > 1))
        if count > 1:
            out += varuint_bytes(count - 2)
    return bytes(out)
