"""ysync.updates on small known updates (bytes printed by yjs 13.6.33) and hostile ones."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from ysync.errors import UpdateFormatError
from ysync.updates import merge_v2, state_vector_from_v2, v1_to_v2, v2_to_v1
from ysync.updates.lib0 import (
    encode_rle_u8,
    encode_string_column,
    encode_uint_opt_rle,
    varuint_bytes,
    write_var_bytes,
    write_varint,
)

# doc.clientID = 5; getText('t').insert(0, 'hello'); getMap('m').set('k', 1)
HELLO_V1 = bytes.fromhex("01020500040101740568656c6c6f2801016d016b017d0100")
HELLO_V2 = bytes.fromhex("000001050000030400280d087468656c6c6f6d6b0105410001010001010102007d0100")
EMPTY_V1 = b"\x00\x00"
EMPTY_V2 = bytes.fromhex("00000000000001000000000000")


def test_known_update_converts_both_ways() -> None:
    assert v1_to_v2(HELLO_V1) == HELLO_V2
    assert v2_to_v1(HELLO_V2) == HELLO_V1
    assert state_vector_from_v2(HELLO_V2) == bytes.fromhex("010506")


def test_empty_update() -> None:
    assert v1_to_v2(EMPTY_V1) == EMPTY_V2
    assert v2_to_v1(EMPTY_V2) == EMPTY_V1
    assert state_vector_from_v2(EMPTY_V2) == b"\x00"
    assert merge_v2([]) == EMPTY_V2  # Y.mergeUpdatesV2([])


def test_merge_of_one_update_is_that_update() -> None:
    assert merge_v2([HELLO_V2]) == HELLO_V2
    assert merge_v2([HELLO_V2, HELLO_V2]) == HELLO_V2
    assert merge_v2([EMPTY_V2, HELLO_V2, EMPTY_V2]) == HELLO_V2


def test_inputs_accept_any_bytes_like() -> None:
    assert v2_to_v1(bytearray(HELLO_V2)) == HELLO_V1
    assert v1_to_v2(memoryview(HELLO_V1)) == HELLO_V2


@pytest.mark.parametrize("cut", range(1, len(HELLO_V1)))
def test_truncated_v1_is_refused(cut: int) -> None:
    with pytest.raises(UpdateFormatError):
        v1_to_v2(HELLO_V1[:cut])


@pytest.mark.parametrize("cut", range(1, len(HELLO_V2)))
def test_truncated_v2_is_refused(cut: int) -> None:
    with pytest.raises(UpdateFormatError):
        v2_to_v1(HELLO_V2[:cut])
    if cut < len(HELLO_V2) - 1:  # like Yjs, the state vector does not read the delete set
        with pytest.raises(UpdateFormatError):
            state_vector_from_v2(HELLO_V2[:cut])


def _v2(columns: list[bytes], rest: bytes) -> bytes:
    out = bytearray(b"\x00")
    for column in columns:
        write_var_bytes(out, column)
    return bytes(out + rest)


def _gc_flood(count: int) -> bytes:
    """A few bytes that claim ``count`` GC structs (every column a run)."""
    return _v2(
        [
            b"",
            encode_uint_opt_rle([1]),
            b"",
            b"",
            encode_rle_u8(b"\x00"),  # GC, forever
            encode_string_column([], [], False),
            b"",
            b"",
            _uint_run(1, count),
        ],
        b"\x01" + varuint_bytes(count) + b"\x00" + b"\x00",
    )


def _uint_run(value: int, count: int) -> bytes:
    """``value`` ``count`` times in a UintOptRle column."""
    out = bytearray()
    write_varint(out, value, True)
    return bytes(out) + varuint_bytes(count - 2)


def _zero_run(count: int) -> bytes:
    """0 ``count`` times in an IntDiffOptRle column (a difference of 0, with a count)."""
    return b"\x01" + varuint_bytes(count - 2)


def _key_flood(count: int, key_length: int) -> bytes:
    """Few bytes whose XML elements reuse one long name ``count`` times (readKey's cache)."""
    name = b"n" * key_length
    return _v2(
        [
            _zero_run(count),  # key numbers: 0, 0, 0, ...
            _uint_run(1, count + 1),  # clients
            _zero_run(count),  # origin clocks
            b"",
            encode_rle_u8(b"\x87"),  # items with an origin and a type, forever
            encode_string_column([name], [key_length], False),
            b"",
            _uint_run(3, count),  # XML elements
            b"",
        ],
        b"\x01" + varuint_bytes(count) + b"\x00" + b"\x00",
    )


def test_few_bytes_cannot_claim_unbounded_work() -> None:
    small = _gc_flood(10)
    assert v2_to_v1(small).startswith(b"\x01\x0a\x01\x00\x00\x01")  # ten GC structs
    for flood in (_gc_flood(2**50), _key_flood(10**7, 1000)):
        tracemalloc.start()
        start = time.monotonic()
        try:
            with pytest.raises(UpdateFormatError, match="too m"):
                v2_to_v1(flood)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.monotonic() - start < 5
        assert peak < 20 * 2**20


def test_budget_allows_runs_of_real_size() -> None:
    # 10 000 GC structs in ~20 bytes: more than 64 per byte, yet within the fixed allowance
    assert len(v2_to_v1(_gc_flood(10_000))) > 10_000


def test_v1_counts_are_checked_against_the_bytes_left() -> None:
    for update in (
        varuint_bytes(2**40) + b"\x00",  # sections
        b"\x01" + varuint_bytes(2**40) + b"\x01\x00" + b"\x00" * 4,  # structs
        b"\x00\x01\x01" + varuint_bytes(2**40) + b"\x00\x00",  # delete set ranges
        b"\x01\x01\x01\x00\x08\x01\x01m" + varuint_bytes(2**40) + b"\x7e",  # any values
    ):
        with pytest.raises(UpdateFormatError):
            v1_to_v2(update)
