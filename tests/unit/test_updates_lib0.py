"""The lib0 encodings under ysync.updates: varints, run-length columns, strings."""

from __future__ import annotations

import random

import pytest

from ysync.errors import UpdateFormatError
from ysync.updates.lib0 import (
    MAX_SAFE_INTEGER,
    StringColumn,
    encode_int_diff_opt_rle,
    encode_rle_u8,
    encode_string_column,
    encode_uint_opt_rle,
    int_diff_opt_rle_column,
    join_js_strings,
    js_length,
    js_to_utf8,
    read_id,
    read_varint,
    read_varuint,
    rle_u8_column,
    uint_opt_rle_column,
    utf8_utf16_length,
    varint_bytes,
    varuint_bytes,
    write_varint,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2**32 - 1, "ffffffff0f"),
    ],
)
def test_varuint_matches_lib0(value: int, encoded: str) -> None:
    assert varuint_bytes(value).hex() == encoded
    assert read_varuint(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)


@pytest.mark.parametrize(
    ("value", "negative", "encoded"),
    [
        (0, False, "00"),
        (0, True, "40"),
        (63, False, "3f"),
        (64, False, "8001"),
        (1, True, "41"),
        (8191, True, "ff7f"),
        (2**31 - 1, False, "bfffffff0f"),
    ],
)
def test_varint_matches_lib0(value: int, negative: bool, encoded: str) -> None:
    out = bytearray()
    write_varint(out, value, negative)
    assert out.hex() == encoded
    assert read_varint(bytes.fromhex(encoded), 0) == (value, negative, len(encoded) // 2)


def test_varints_round_trip() -> None:
    rng = random.Random(1)
    values = [rng.randrange(1 << rng.randrange(1, 54)) for _ in range(2000)] + [MAX_SAFE_INTEGER]
    for v in values:
        assert read_varuint(varuint_bytes(v) + b"\x00", 0) == (v, len(varuint_bytes(v)))
        assert read_id(varuint_bytes(v) * 2, 0) == ((v, v), 2 * len(varuint_bytes(v)))
        for signed in (v, -v):
            magnitude, negative, _ = read_varint(varint_bytes(signed), 0)
            assert (-magnitude if negative else magnitude) == signed


def test_varuint_rejects_overlong_and_truncated() -> None:
    with pytest.raises(UpdateFormatError):
        read_varuint(b"\xff" * 9 + b"\x01", 0)
    with pytest.raises(UpdateFormatError):
        read_varuint(b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 0)  # above 2**53 - 1
    with pytest.raises((UpdateFormatError, IndexError)):
        read_varuint(b"\x80\x80", 0)  # the decoders turn IndexError into UpdateFormatError
    with pytest.raises(UpdateFormatError):
        read_varint(b"\x80", 0)


def _js_uint_opt_rle(values: list[int]) -> bytes:
    """A line-by-line transcription of lib0's UintOptRleEncoder."""
    out = bytearray()
    s, count = 0, 0

    def flush() -> None:
        if count > 0:
            write_varint(out, s, count != 1)
            if count > 1:
                out.extend(varuint_bytes(count - 2))

    for v in values:
        if s == v:
            count += 1
        else:
            flush()
            count, s = 1, v
    flush()
    return bytes(out)


def _js_int_diff_opt_rle(values: list[int]) -> bytes:
    """A line-by-line transcription of lib0's IntDiffOptRleEncoder."""
    out = bytearray()
    s, count, diff = 0, 0, 0

    def flush() -> None:
        if count > 0:
            encoded = diff * 2 + (0 if count == 1 else 1)
            write_varint(out, abs(encoded), encoded < 0)
            if count > 1:
                out.extend(varuint_bytes(count - 2))

    for v in values:
        if diff == v - s:
            s = v
            count += 1
        else:
            flush()
            count, diff, s = 1, v - s, v
    flush()
    return bytes(out)


def test_run_length_columns_match_lib0_and_round_trip() -> None:
    rng = random.Random(2)
    for _ in range(3000):
        n = rng.randrange(0, 14)
        uints = [rng.choice([0, 0, 1, 5, 63, 64, 8191, 8192, 2**20, 2**40]) for _ in range(n)]
        assert encode_uint_opt_rle(uints) == _js_uint_opt_rle(uints)
        assert list(uint_opt_rle_column(encode_uint_opt_rle(uints))) == uints
        clocks = [rng.choice([0, 1, 2, 3, 100, 4096, 2**22, 2**40]) for _ in range(n)]
        assert encode_int_diff_opt_rle(clocks) == _js_int_diff_opt_rle(clocks)
        assert list(int_diff_opt_rle_column(encode_int_diff_opt_rle(clocks))) == clocks
        infos = bytes(rng.choice([0, 4, 4, 8, 0x84, 0xC4, 10]) for _ in range(n))
        column = rle_u8_column(encode_rle_u8(infos))
        assert [next(column) for _ in infos] == list(infos)
        if infos:  # the last value repeats forever
            assert next(column) == infos[-1]


def test_columns_reject_values_out_of_range() -> None:
    with pytest.raises(UpdateFormatError):
        int_diff_opt_rle_column(b"\x41")  # a diff of -1 from 0: a negative clock
    huge = bytes(varint_bytes(2 * 2**50 + 1)) + varuint_bytes(10)  # 2**50, 12 times
    with pytest.raises(UpdateFormatError):
        int_diff_opt_rle_column(huge)
    with pytest.raises(UpdateFormatError):
        uint_opt_rle_column(b"\x41")  # a run whose count is missing


def test_string_column_cuts_by_utf16_units() -> None:
    pieces: list[str | bytes] = ["a😀b".encode(), "\ud83d", "\ude00", "é".encode()]
    lengths = [js_length(p) for p in pieces]
    assert lengths == [4, 1, 1, 1]
    column = encode_string_column(pieces, lengths, lone=True)
    # the two halves written apart meet again in the column as one character
    assert column[1:].startswith("a😀b😀é".encode())
    reader = StringColumn(column)
    assert [reader.read_sized() for _ in pieces] == [
        ("a😀b".encode(), 4),
        ("\ud83d", 1),
        ("\ude00", 1),
        ("é".encode(), 1),
    ]
    with pytest.raises(UpdateFormatError):
        reader.read()


def test_string_column_reads_ascii_bmp_and_astral_text() -> None:
    for text in ["hello world", "héllo wörld", "h😀llo w🎉rld"]:
        units = len(text.encode("utf-16-le")) // 2
        column = encode_string_column([text.encode()], [units], lone=False)
        reader = StringColumn(column[:-1] + encode_uint_opt_rle([1] * units))
        got = b"".join(js_to_utf8(reader.read()) for _ in range(units))
        all_units = text.encode("utf-16-le")
        expected = b"".join(
            all_units[i : i + 2].decode("utf-16-le", "replace").encode()
            for i in range(0, units * 2, 2)
        )
        assert got == expected  # halves of a pair each become U+FFFD in UTF-8


def test_utf16_lengths_and_lone_surrogates() -> None:
    assert utf8_utf16_length("a😀é".encode()) == 4
    assert js_length("\ud83d") == 1
    assert js_to_utf8("a\ud83d") == "a\ufffd".encode()
    assert join_js_strings(["\ud83d", "\ude00", b"x"]) == "😀x".encode()
    with pytest.raises(UpdateFormatError):
        utf8_utf16_length(b"\xed\xa0\x80")  # a surrogate in UTF-8 is invalid (fatal decoder)
