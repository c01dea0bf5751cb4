"""JavaScript value semantics of ysync.updates.jsvalues (expected values printed by Node 20)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from ysync.errors import UpdateFormatError
from ysync.updates.jsvalues import (
    UNDEFINED,
    BigInt,
    canonical_any,
    js_number_to_string,
    json_parse,
    json_stringify,
    normalize_doc_options,
    normalize_json_text,
    read_any,
    write_any,
)

# String(n) in Node 20
NUMBER_STRINGS = [
    (0.0, "0"),
    (-0.0, "0"),
    (1, "1"),
    (-1, "-1"),
    (0.1, "0.1"),
    (1e21, "1e+21"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (123456789012345680000.0, "123456789012345680000"),
    (2.0**53, "9007199254740992"),
    (2**31, "2147483648"),
    (1 / 3, "0.3333333333333333"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (1e6, "1000000"),
    (0.000001, "0.000001"),
    (123.456, "123.456"),
    (-1e-7, "-1e-7"),
    (1e20, "100000000000000000000"),
    (12345678901234567890.0, "12345678901234567000"),
    (math.inf, "Infinity"),
    (math.nan, "NaN"),
]


@pytest.mark.parametrize(("number", "text"), NUMBER_STRINGS)
def test_numbers_print_like_javascript(number: float, text: str) -> None:
    assert js_number_to_string(number) == text


# lib0 writeAny in Node 20
ANY_BYTES = [
    (2, "7d02"),
    (2.0, "7d02"),
    (0.5, "7c3f000000"),
    (1 / 3, "7b3fd5555555555555"),
    (-0.0, "7d40"),
    (2.0**31, "7c4f000000"),
    (-(2.0**31), "7ccf000000"),
    (math.inf, "7c7f800000"),
    (math.nan, "7b7ff8000000000000"),
    (3.4028234663852886e38, "7c7f7fffff"),
    (1e-45, "7b3696d601ad376ab9"),
    (2**31, "7c4f000000"),
    (None, "7e"),
    (True, "78"),
    (False, "79"),
    (UNDEFINED, "7f"),
    ("é", "7702c3a9"),
    ("\ud83d", "7703efbfbd"),
    (b"\x01", "740101"),
    (BigInt(-2), "7afffffffffffffffe"),
    ([1, "a"], "75027d01770161"),
    ({"a": None}, "760101617e"),
]


@pytest.mark.parametrize(("value", "encoded"), ANY_BYTES)
def test_values_encode_like_lib0(value: Any, encoded: str) -> None:
    out = bytearray()
    write_any(out, value)
    assert out.hex() == encoded


def test_values_decode_with_javascript_key_order() -> None:
    # {"b":1,"10":2,"2":3,"a":4,"01":5,"4294967295":6,"4294967294":7,"b":8} as readAny sees it
    pairs = [
        ("b", 1),
        ("10", 2),
        ("2", 3),
        ("a", 4),
        ("01", 5),
        ("4294967295", 6),
        ("4294967294", 7),
        ("b", 8),
        ("__proto__", 9),
    ]
    data = bytearray(b"\x76" + bytes([len(pairs)]))
    for key, number in pairs:
        data += bytes([len(key)]) + key.encode() + bytes([0x7D, number])
    value, end = read_any(bytes(data), 0)
    assert end == len(data)
    # array indices first (ascending), then the rest in first-assignment order, no __proto__
    assert list(value.items()) == [
        ("2", 3),
        ("10", 2),
        ("4294967294", 7),
        ("b", 8),
        ("a", 4),
        ("01", 5),
        ("4294967295", 6),
    ]
    assert json_parse('{"b":1,"2":2,"__proto__":3}') == {"2": 2.0, "b": 1.0, "__proto__": 3.0}


def test_canonical_any_rewrites_like_yjs() -> None:
    data = (
        b"\x7b"
        + struct.pack(">d", 2.0)  # a float64 integer becomes a varint
        + b"\x7d\x80\x00"  # a non-minimal varint is shortened
        + b"\x7d\xbf\xff\xff\xff\x0f"  # 2**31 - 1 stays
        + b"\x7d\x80\x80\x80\x80\x10"  # 2**31 as a varint becomes a float32
    )
    encoded, end = canonical_any(data, 0, 4)
    assert end == len(data)
    assert encoded.hex() == "7d02" + "7d00" + "7dbfffffff0f" + "7c4f000000"


def test_json_round_trips_like_javascript() -> None:
    assert normalize_json_text(' {"b":1.0,"1":[1E2,-0,"\\u0041"]} ') == '{"1":[100,0,"A"],"b":1}'
    assert normalize_json_text('"\\ud83d"') == '"\\ud83d"'
    assert normalize_json_text('"\\ud83d\\ude00"') == '"😀"'
    assert normalize_json_text('"\\u0000\\u001f\\u007f\\u2028"') == '"\\u0000\\u001f\x7f\u2028"'
    assert normalize_json_text("undefined") == "undefined"
    assert normalize_json_text("123456789012345678901") == "123456789012345680000"
    assert json_stringify([UNDEFINED, b"\x01\x02", {"u": UNDEFINED}, math.nan]) == (
        '[null,{"0":1,"1":2},{},null]'
    )
    assert json_stringify(UNDEFINED) is None
    for bad in ["", "NaN", "Infinity", "[1,]", "'a'", "01", "\ufeff1", '"\x01"', "[" * 300]:
        with pytest.raises(UpdateFormatError):
            json_parse(bad)
    with pytest.raises(UpdateFormatError):
        json_stringify(BigInt(1))


def test_subdocument_options_are_rewritten_like_yjs() -> None:
    assert normalize_doc_options(b"g", {"gc": 0, "autoLoad": "y", "meta": None}) == (
        b"g",
        {"gc": False, "autoLoad": True},
    )
    assert normalize_doc_options(b"g", {"meta": [1], "gc": True, "shouldLoad": True}) == (
        b"g",
        {"meta": [1]},
    )
    assert normalize_doc_options(b"g", {"guid": "h"}) == (b"h", {})
    assert normalize_doc_options(b"g", 5) == (b"g", {})
    assert normalize_doc_options(b"g", "str") == (b"g", {})
    for bad in (None, UNDEFINED, {"guid": 5}):
        with pytest.raises(UpdateFormatError):
            normalize_doc_options(b"g", bad)


def test_values_refuse_deep_nesting_and_bad_tags() -> None:
    with pytest.raises(UpdateFormatError):
        read_any(b"\x75\x01" * 300 + b"\x7e", 0)
    with pytest.raises(UpdateFormatError):
        read_any(b"\x10", 0)
    with pytest.raises(UpdateFormatError):
        read_any(b"\x75\x05\x7e", 0)  # more items announced than bytes left
