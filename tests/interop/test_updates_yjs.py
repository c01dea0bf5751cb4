"""ysync.updates against the real yjs, run in Node.js while the tests run.

Fresh random documents (other seeds, more clients and edits than the committed corpus) are
converted both ways, merged and measured by us and by yjs; yjs then reads what we wrote.
Hand-made updates cover what yjs does not write itself any more (ContentJSON, values in a
non-canonical encoding, odd option objects of subdocuments, repeated sections and delete set
entries), and mutated updates check that we never accept what yjs rejects.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest
from interop.test_updates_support import (
    CORPUS_ARGS,
    EXOTIC,
    ask_yjs,
    b64,
    check_against_yjs_outputs,
    enc,
    generate,
    load_corpus,
    pycrdt_view,
    without_negative_zero,
    yjs_view,
)

from ysync.errors import UpdateFormatError
from ysync.updates import merge_v2, state_vector_from_v2, v1_to_v2, v2_to_v1
from ysync.updates.lib0 import varuint_bytes

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def fresh(node_dir: Path) -> list[dict[str, Any]]:
    """Documents of seeds 1001.. with all their updates (4 clients) and 1101.. (3 clients)."""
    return [
        *generate(node_dir, ["--from", "1001", "--count", "12", "--ops", "120", "--clients", "4"]),
        *generate(node_dir, ["--from", "1101", "--count", "8", "--ops", "60"]),
    ]


def test_fresh_documents_convert_to_the_bytes_of_yjs(fresh: list[dict[str, Any]]) -> None:
    for case in fresh:
        check_against_yjs_outputs(case)


def test_yjs_reads_our_updates_as_its_document(node_dir: Path, fresh: list[dict[str, Any]]) -> None:
    """Yjs builds the same document from our updates as from its own ones.

    (Applying updates in turn may differ from the document that emitted them: Yjs puts
    U+FFFD where an update starts inside a surrogate pair. Hence yjs reading its own updates
    is the reference, not the document the clients ended with.)
    """
    requests = []
    for case in fresh:
        updates = [b64(u) for u in case["updates_v2"]]
        requests += [
            {"op": "json_v2", "update": case["v2"]},
            {"op": "json_v2", "update": enc(v1_to_v2(b64(case["v1"])))},
            {"op": "json_v1", "update": enc(v2_to_v1(b64(case["v2"])))},
            {"op": "json_v2", "update": case["merged"]},
            {"op": "json_v2", "update": enc(merge_v2(updates))},
            {"op": "json_v2", "updates": case["updates_v2"]},
            {"op": "json_v1", "updates": [enc(v2_to_v1(u)) for u in updates]},
        ]
    answers = ask_yjs(node_dir, requests)
    for i, case in enumerate(fresh):
        state, ours_v2, ours_v1, merged, ours_merged, in_turn, ours_in_turn = answers[
            7 * i : 7 * i + 7
        ]
        assert ours_merged == merged, case["seed"]
        if case["seed"] % EXOTIC:
            # exotic documents hold lone surrogates: v1 (UTF-8) turns them into U+FFFD
            assert state == {"json": case["json"]}, case["seed"]
            assert without_negative_zero(ours_v2) == without_negative_zero(state), case["seed"]
            assert without_negative_zero(ours_v1) == without_negative_zero(state), case["seed"]
            assert without_negative_zero(ours_in_turn) == without_negative_zero(in_turn)


def test_pycrdt_reads_our_v1_as_the_yjs_document(fresh: list[dict[str, Any]]) -> None:
    """pycrdt gets from our v1 the document yjs had (state updates only: from incremental
    updates yrs builds a few documents unlike yjs, next to cut surrogate pairs or formatting,
    whatever their encoding, so those are compared in yjs above)."""
    for case in fresh:
        if case["seed"] % EXOTIC:
            view = pycrdt_view(v2_to_v1(b64(case["v2"])))
            assert view == yjs_view(without_negative_zero(case["json"])), case["seed"]


def test_committed_corpus_is_what_the_generator_writes(node_dir: Path) -> None:
    args = list(CORPUS_ARGS)
    args[args.index("--count") + 1] = "3"
    assert generate(node_dir, args) == load_corpus()[:3]


# --- hand-made v1 updates ------------------------------------------------------------------


def vs(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return varuint_bytes(len(raw)) + raw


def item(ref: int, content: bytes, root: str = "map", key: str | None = "k") -> bytes:
    """An item without origins in root type ``root`` (under map key ``key``)."""
    info = ref | (0x20 if key is not None else 0)
    return bytes([info]) + b"\x01" + vs(root) + (vs(key) if key is not None else b"") + content


def update_v1(
    sections: list[tuple[int, int, list[bytes]]], ds: list[tuple[int, list[tuple[int, int]]]]
) -> bytes:
    out = varuint_bytes(len(sections))
    for client, clock, structs in sections:
        out += varuint_bytes(len(structs)) + varuint_bytes(client) + varuint_bytes(clock)
        out += b"".join(structs)
    out += varuint_bytes(len(ds))
    for client, ranges in ds:
        out += varuint_bytes(client) + varuint_bytes(len(ranges))
        for clock, length in ranges:
            out += varuint_bytes(clock) + varuint_bytes(length)
    return out


def one(struct_: bytes, client: int = 7) -> bytes:
    return update_v1([(client, 0, [struct_])], [])


def f64(x: float) -> bytes:
    return b"\x7b" + struct.pack(">d", x)


def f32(x: float) -> bytes:
    return b"\x7c" + struct.pack(">f", x)


def json_item(*texts: str) -> bytes:
    return one(item(2, varuint_bytes(len(texts)) + b"".join(vs(t) for t in texts), "arr", None))


def any_item(*values: bytes) -> bytes:
    return one(item(8, varuint_bytes(len(values)) + b"".join(values)))


def doc_item(opts: bytes, guid: str = "g") -> bytes:
    return one(item(9, vs(guid) + opts))


OBJ_ODD_KEYS = (
    b"\x76\x05"
    + vs("b")
    + b"\x7d\x01"
    + vs("1")
    + b"\x7d\x02"
    + vs("b")
    + (b"\x7d\x03" + vs("__proto__") + b"\x7d\x04" + vs("0") + b"\x7e")
)

HANDMADE_V1: dict[str, bytes] = {
    "json-numbers": json_item("1.0", "-0", "1E21", "123456789012345678901", "1e400", "5e-7"),
    "json-objects": json_item('{"b":1,"1":2,"b":3,"__proto__":{"x":1}}', ' [ 1 , "\\u0041" ] '),
    "json-strings": json_item('"\\ud83d"', '"\\ud83d\\ude00"', '"\\u2028\\u0000"', "undefined"),
    "json-invalid": json_item("NaN"),
    "json-empty": json_item(""),
    "format-values": one(item(6, vs("bold") + vs("1.0"), "text", None)),
    "format-object": one(item(6, vs("é") + vs('{"2":1,"1":{"a":[1.5,-0]}}'), "text", None)),
    "embed": one(item(5, vs('{"image":"a.png","w":2.50}'), "text", None)),
    "any-floats": any_item(f64(2.0), f64(0.5), f32(3.0), f64(-0.0), f64(float("inf")), f64(1e300)),
    "any-nan": any_item(f64(float("nan")), f32(float("nan"))),
    "any-ints": any_item(
        b"\x7d\x80\x00",  # 0, non-minimal
        b"\x7d\xc0\x00",  # -0, non-minimal
        b"\x7d\x40",  # -0
        b"\x7d" + bytes([0x80 | 0x3F, 0xFF, 0xFF, 0xFF, 0x0F]),  # beyond 2**31-1
    ),
    "any-object": any_item(OBJ_ODD_KEYS),
    "any-misc": any_item(b"\x7f", b"\x7a" + struct.pack(">q", -5), b"\x74" + vs(b"\x00\xff")),
    "any-bad-tag": any_item(b"\x10"),
    "doc-opts": doc_item(
        b"\x76\x03"
        + vs("gc")
        + b"\x7d\x00"
        + vs("autoLoad")
        + b"\x77"
        + vs("y")
        + (vs("meta") + b"\x7e")
    ),
    "doc-meta": doc_item(b"\x76\x02" + vs("meta") + b"\x75\x01\x78" + vs("gc") + b"\x78"),
    "doc-guid": doc_item(b"\x76\x01" + vs("guid") + b"\x77" + vs("other")),
    "doc-number": doc_item(b"\x7d\x05"),
    "doc-string": doc_item(b"\x77" + vs("ab")),
    "doc-null": doc_item(b"\x7e"),
    "types": update_v1(
        [
            (
                3,
                0,
                [
                    item(7, bytes([ref]) + (vs("n") if ref in (3, 5) else b""), "t", None)
                    for ref in range(7)
                ],
            )
        ],
        [],
    ),
    "type-unknown": one(item(7, b"\x07", "t", None)),
    "binary": one(item(3, vs(b"\x01\x02"))),
    "string-astral": one(item(4, vs("a😀b"), "text", None)),
    "string-bad-utf8": one(item(4, vs(b"a\xff"), "text", None)),
    "string-surrogate-utf8": one(item(4, vs(b"\xed\xa0\xbd"), "text", None)),
    "deleted": one(item(1, b"\x05", "arr", None)),
    "gc-and-skip": update_v1([(9, 3, [b"\x00\x02", b"\x0a\x04", b"\x80\x01", b"\xe0\x01"])], []),
    "parent-id-and-origins": update_v1(
        [
            (
                5,
                0,
                [
                    item(7, b"\x01", "map", "m"),
                    b"\x28\x00\x05\x00" + vs("x") + b"\x01\x7d\x01",  # parent (5,0), key x
                    b"\x28\x02\x05\x00" + vs("y") + b"\x01\x7d\x02",  # parent info 2 = an ID
                    b"\xa8\x05\x02\x01\x7d\x03",  # origin + parentSub bit: no parent written
                    b"\x44\x05\x01" + vs("zz"),  # right origin only
                ],
            )
        ],
        [],
    ),
    "sections-repeat": update_v1(
        [(4, 0, [item(8, b"\x01\x7e")]), (4, 10, [item(8, b"\x01\x78")]), (2, 0, []), (4, 20, [])],
        [],
    ),
    "ds-odd": update_v1(
        [], [(3, [(5, 2)]), (9, []), (3, [(10, 1)]), (2**32 - 1, [(0, 3), (3, 1)])]
    ),
    "ds-overlap": update_v1([], [(3, [(5, 4), (6, 1)])]),
    "ds-unsorted": update_v1([], [(3, [(5, 2)]), (3, [(1, 1)])]),
    "ds-empty-range": update_v1([], [(3, [(5, 0)])]),
    "trailing-bytes": any_item(b"\x78") + b"\x01\x02\x03",
    "empty": b"\x00\x00",
}

#: Inputs where yjs does not throw but writes garbage: we refuse them instead.
WE_REFUSE = {"ds-overlap", "ds-unsorted"}


def test_handmade_v1_updates_convert_like_yjs(node_dir: Path) -> None:
    names = list(HANDMADE_V1)
    answers = ask_yjs(node_dir, [{"op": "v1_to_v2", "update": enc(HANDMADE_V1[n])} for n in names])
    back = []
    for name, answer in zip(names, answers, strict=True):
        update = HANDMADE_V1[name]
        if "error" in answer or name in WE_REFUSE:
            with pytest.raises(UpdateFormatError):
                v1_to_v2(update)
            continue
        ours = v1_to_v2(update)
        assert ours == b64(answer["update"]), name
        back.append((name, ours))
    assert len(back) >= 25
    # and yjs's v2 of those back to v1, with the state vector
    requests = [{"op": op, "update": enc(v2)} for _, v2 in back for op in ("v2_to_v1", "sv_v2")]
    answers = ask_yjs(node_dir, requests)
    for i, (name, v2) in enumerate(back):
        to_v1, sv = answers[2 * i : 2 * i + 2]
        if "error" in to_v1:
            with pytest.raises(UpdateFormatError):
                v2_to_v1(v2)
        else:
            assert v2_to_v1(v2) == b64(to_v1["update"]), name
        assert state_vector_from_v2(v2) == b64(sv["sv"]), name


def _column_v2(keys: list[int], names: list[str]) -> bytes:
    """A v2 update of root XML elements whose names are ``readKey`` numbers ``keys``."""
    from ysync.updates.lib0 import (
        encode_int_diff_opt_rle,
        encode_rle_u8,
        encode_string_column,
        encode_uint_opt_rle,
        write_var_bytes,
    )

    strings: list[str | bytes] = []
    known = 0
    for key in keys:
        strings.append(b"xml")  # each item's parent
        if key >= known and known < len(names):  # a new key: its name follows
            strings.append(names[known].encode())
            known += 1
    columns = [
        encode_int_diff_opt_rle(keys),
        encode_uint_opt_rle([7]),
        b"",
        b"",
        encode_rle_u8(b"\x07"),
        encode_string_column(strings, [len(s) for s in strings], False),
        encode_rle_u8(b"\x01"),
        encode_uint_opt_rle([3] * len(keys)),
        b"",
    ]
    out = bytearray(b"\x00")
    for column in columns:
        write_var_bytes(out, column)
    out += b"\x01" + varuint_bytes(len(keys)) + b"\x00" + b"\x00"
    return bytes(out)


def test_handmade_v2_updates_convert_like_yjs(node_dir: Path) -> None:
    cases = {
        "reused-keys": _column_v2([0, 1, 0, 1, 0], ["p", "h1"]),
        "key-gap": _column_v2([5, 0], ["p", "q"]),
        "key-missing": _column_v2([0, 1], ["p"]),
    }
    names = list(cases)
    answers = ask_yjs(node_dir, [{"op": "v2_to_v1", "update": enc(cases[n])} for n in names])
    for name, answer in zip(names, answers, strict=True):
        # yjs reads past the end of the string column as "": we refuse that
        if "error" in answer or name == "key-missing":
            with pytest.raises(UpdateFormatError):
                v2_to_v1(cases[name])
        else:
            assert v2_to_v1(cases[name]) == b64(answer["update"]), name


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        b = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            del b[rng.randrange(1, len(b)) :]
        elif kind == 1:
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            i = rng.randrange(len(b))
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("direction", ["v1_to_v2", "v2_to_v1"])
def test_we_never_accept_what_yjs_rejects(node_dir: Path, direction: str) -> None:
    """Mutated updates: where yjs throws we raise; where both convert, the bytes agree."""
    rng = random.Random(7)
    field = "v1" if direction == "v1_to_v2" else "v2"
    ours_fn = v1_to_v2 if direction == "v1_to_v2" else v2_to_v1
    inputs = []
    for case in load_corpus()[:12]:
        inputs += _mutations(b64(case[field]), rng, 25)
    answers = ask_yjs(node_dir, [{"op": direction, "update": enc(u)} for u in inputs])
    agreed = 0
    for update, answer in zip(inputs, answers, strict=True):
        try:
            ours = ours_fn(update)
        except UpdateFormatError:
            continue  # yjs may go on with garbage (it reads zeros past the end of a column)
        assert "error" not in answer, update.hex()
        assert ours == b64(answer["update"]), update.hex()
        agreed += 1
    assert agreed > 0
