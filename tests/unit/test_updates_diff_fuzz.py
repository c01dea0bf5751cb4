"""diff_v2 / diff_v1 on known and hostile input (byte equality with yjs: tests/interop).

Whatever the bytes of update and state vector, the diff either succeeds or raises
UpdateFormatError, within a time bound; what it writes is an update the codec reads again.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_updates_fuzz import FUZZ, OUTPUT_PER_INPUT_BYTE, mutated

from ysync.errors import UpdateFormatError
from ysync.updates import diff_v1, diff_v2, state_vector_from_v2, v1_to_v2, v2_to_v1
from ysync.updates.diff import decode_state_vector
from ysync.updates.lib0 import varuint_bytes

CORPUS = Path(__file__).parents[1] / "interop" / "fixtures" / "updates" / "corpus.jsonl.gz"


def _seeds() -> tuple[list[bytes], list[bytes], list[bytes]]:
    v1: list[bytes] = []
    v2: list[bytes] = []
    svs: list[bytes] = [b"\x00"]
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in list(f)[:8]:
            case = json.loads(line)
            v1 += [base64.b64decode(case["v1"]), base64.b64decode(case["partial_v1"])]
            v2 += [base64.b64decode(case["v2"]), base64.b64decode(case["partial"])]
            svs += [base64.b64decode(case["sv"]), base64.b64decode(case["partial_sv"])]
    return v1, v2, svs


SEEDS_V1, SEEDS_V2, SEEDS_SV = _seeds()


def test_empty_state_vector_keeps_everything() -> None:
    for update in SEEDS_V2:
        assert diff_v2(update, b"\x00") == v1_to_v2(v2_to_v1(update))
    for update in SEEDS_V1:
        assert diff_v1(update, b"\x00") == v2_to_v1(v1_to_v2(update))


def test_full_state_vector_keeps_the_delete_set_only() -> None:
    for update in SEEDS_V2[::2]:  # whole documents (no gaps)
        sv = state_vector_from_v2(update)
        rest = v2_to_v1(diff_v2(update, sv))
        assert rest[0] == 0  # no sections
        assert rest == diff_v1(v2_to_v1(update), sv)
        assert rest[1:] == v2_to_v1(update)[-len(rest) + 1 :]  # the whole delete set


def test_state_vector_reading() -> None:
    assert decode_state_vector(b"\x02\x05\x03\x05\x07\xff") == {5: 7}  # last wins, rest ignored
    for bad in (b"", b"\x01", b"\x01\x05", b"\x02\x05\x03", b"\x80", b"\xff\xff\xff\xff\x0f"):
        with pytest.raises(UpdateFormatError):
            decode_state_vector(bad)
        with pytest.raises(UpdateFormatError):
            diff_v2(SEEDS_V2[0], bad)


def _check(data: bytes, sv: bytes, v2: bool) -> None:
    try:
        out = diff_v2(data, sv) if v2 else diff_v1(data, sv)
    except UpdateFormatError:
        return
    assert len(out) <= OUTPUT_PER_INPUT_BYTE * len(data) + 2**20
    try:  # what we write we read (unless it is a BigInt where v1 must write JSON)
        v1_to_v2(v2_to_v1(out)) if v2 else v2_to_v1(v1_to_v2(out))
    except UpdateFormatError as exc:
        assert "delete set" in str(exc) or "BigInt" in str(exc) or "JSON" in str(exc), exc


_svs = st.one_of(st.sampled_from(SEEDS_SV), mutated(SEEDS_SV), st.binary(max_size=40))


@settings(FUZZ, max_examples=400)
@given(st.one_of(mutated(SEEDS_V2), st.binary(max_size=300)), _svs)
def test_v2_input(data: bytes, sv: bytes) -> None:
    _check(data, sv, v2=True)


@settings(FUZZ, max_examples=400)
@given(st.one_of(mutated(SEEDS_V1), st.binary(max_size=300)), _svs)
def test_v1_input(data: bytes, sv: bytes) -> None:
    _check(data, sv, v2=False)


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(SEEDS_V2), st.dictionaries(st.integers(0, 2**32), st.integers(0, 300)))
def test_any_state_vector_of_a_valid_update(update: bytes, clocks: dict[int, int]) -> None:
    """Cutting a valid update anywhere gives an update (clients taken from the document)."""
    sv_clients = list(decode_state_vector(state_vector_from_v2(update)))
    entries = list(clocks.items()) + [(c, clocks.get(c, 0) % 97) for c in sv_clients]
    sv = varuint_bytes(len(entries))
    for client, clock in entries:
        sv += varuint_bytes(client) + varuint_bytes(clock)
    out = diff_v2(update, sv)
    assert v1_to_v2(diff_v1(v2_to_v1(update), sv)) == v1_to_v2(v2_to_v1(out))
