"""diff_v2 / diff_v1 against Y.diffUpdateV2 / Y.diffUpdate, run in Node.js.

For the committed corpus and fresh documents (tests/node/updates_diff.mjs), exotic seeds
included, the diff of whole documents, of updates with gaps (Skip structs) and of single
emitted updates against many state vectors - earlier states of the edit history (each client's
doc mid-way, prefixes of the emitted updates), another document's, the empty one and one that
covers everything - is byte for byte what yjs computes; and applied in yjs to a document at
that state it gives the whole document.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from interop.test_updates_support import EXOTIC, ask_yjs, b64, enc, load_corpus
from interop.test_updates_yjs import item, update_v1, vs

from ysync.updates import diff_v1, diff_v2, state_vector_from_v2, v1_to_v2, v2_to_v1
from ysync.updates.diff import decode_state_vector
from ysync.updates.lib0 import varuint_bytes
from ysync.updates.structs import STRING, Update
from ysync.updates.v2 import encode_v2

pytestmark = pytest.mark.node

EMPTY_SV = b"\x00"


def _generate(node_dir: Path, args: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["node", str(node_dir / "updates_diff.mjs"), *args],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fresh(node_dir: Path) -> list[dict[str, Any]]:
    """Seeds 2001.. (3 clients) and 2101.. (4 clients); one in four is exotic."""
    return [
        *_generate(node_dir, ["--from", "2001", "--count", "12", "--ops", "90"]),
        *_generate(node_dir, ["--from", "2101", "--count", "4", "--ops", "60", "--clients", "4"]),
    ]


def _compare_diffs(node_dir: Path, pairs: list[tuple[int, bytes, bytes]]) -> None:
    """Our diff of each (seed, v2 update, state vector), in v2 and v1, is yjs's."""
    requests = []
    for _, update, sv in pairs:
        requests.append({"op": "diff_v2", "update": enc(update), "sv": enc(sv)})
        requests.append({"op": "diff_v1", "update": enc(v2_to_v1(update)), "sv": enc(sv)})
    answers = ask_yjs(node_dir, requests)
    for i, (seed, update, sv) in enumerate(pairs):
        theirs_v2, theirs_v1 = answers[2 * i], answers[2 * i + 1]
        assert "update" in theirs_v2 and "update" in theirs_v1, (seed, theirs_v2, theirs_v1)
        assert diff_v2(update, sv) == b64(theirs_v2["update"]), (seed, sv)
        assert diff_v1(v2_to_v1(update), sv) == b64(theirs_v1["update"]), (seed, sv)


def _check_applied(node_dir: Path, docs: list[tuple[int, bytes, list[bytes]]]) -> None:
    """For each (seed, full v2 document, earlier states as v2 updates): yjs builds the full
    document from an earlier state and our diff against its state vector, in v2 and v1.

    (The reference is yjs reading the full document in the same format: v1 has no -0 in
    embeds and formatting attributes, JSON there.)
    """
    requests: list[dict[str, Any]] = []
    for _, full, states in docs:
        full_v1 = v2_to_v1(full)
        requests.append({"op": "json_v2", "update": enc(full)})
        requests.append({"op": "json_v1", "update": enc(full_v1)})
        for state in states:
            sv = state_vector_from_v2(state)
            requests.append({"op": "json_v2", "updates": [enc(state), enc(diff_v2(full, sv))]})
            requests.append(
                {"op": "json_v1", "updates": [enc(v2_to_v1(state)), enc(diff_v1(full_v1, sv))]}
            )
    answers = iter(ask_yjs(node_dir, requests))
    for seed, _, states in docs:
        expected_v2, expected_v1 = next(answers), next(answers)
        assert "json" in expected_v2 and "json" in expected_v1, (seed, expected_v2)
        for _ in states:
            assert next(answers) == expected_v2, seed
            assert next(answers) == expected_v1, seed


def _random_state_vectors(seed: int, full: bytes, count: int = 4) -> list[bytes]:
    """State vectors with random clocks up to the document's: they cut structs anywhere
    (strings inside a surrogate pair, runs of values, GC and deleted ranges). The last one
    lists a client twice (the last clock counts), one that the document lacks and has a byte
    after its entries (ignored, as yjs does)."""
    rng = random.Random(seed)
    clocks = list(decode_state_vector(state_vector_from_v2(full)).items())
    svs = []
    for i in range(count):
        entries = [(client, rng.randint(0, clock)) for client, clock in clocks]
        rng.shuffle(entries)
        extra = b""
        if i == count - 1:
            entries = [(client, rng.randint(0, 5)) for client, _ in entries] + entries
            entries.append((123456789, 7))
            extra = b"\x05"
        sv = varuint_bytes(len(entries))
        for client, clock in entries:
            sv += varuint_bytes(client) + varuint_bytes(clock)
        svs.append(sv + extra)
    return svs


def _state_vectors(seed: int, full: bytes, states: list[bytes], other: bytes) -> list[bytes]:
    return [
        EMPTY_SV,
        state_vector_from_v2(full),
        state_vector_from_v2(other),  # another document's (clients in common, other clocks)
        *(state_vector_from_v2(s) for s in states),
        *_random_state_vectors(seed, full),
    ]


def test_fresh_diffs_are_the_bytes_of_yjs(node_dir: Path, fresh: list[dict[str, Any]]) -> None:
    pairs = []
    for i, case in enumerate(fresh):
        other = b64(fresh[i - 1]["v2"])
        svs = [
            *_state_vectors(case["seed"], b64(case["v2"]), [], other),
            *(b64(s["sv"]) for s in case["states"]),
        ]
        inputs = [b64(case["v2"]), b64(case["partial"]), *(b64(u) for u in case["some_v2"])]
        pairs += [(case["seed"], update, sv) for update in inputs for sv in svs]
    assert any(case["seed"] % EXOTIC == 0 for case in fresh)
    _compare_diffs(node_dir, pairs)


def test_fresh_diffs_complete_earlier_states(node_dir: Path, fresh: list[dict[str, Any]]) -> None:
    _check_applied(
        node_dir,
        [(case["seed"], b64(case["v2"]), [b64(s["v2"]) for s in case["states"]]) for case in fresh],
    )


@pytest.fixture(scope="module")
def corpus_states(node_dir: Path) -> list[tuple[dict[str, Any], list[bytes]]]:
    """Each corpus case with states of a doc after the first 1, 3 and 5 of its sampled updates
    (applied in the sampled order: some structs may be pending)."""
    cases = load_corpus()
    requests = [
        {"op": "state_v2", "updates": case["updates_v2"][:k]} for case in cases for k in (1, 3, 5)
    ]
    answers = ask_yjs(node_dir, requests)
    return [
        (case, [b64(a["update"]) for a in answers[3 * i : 3 * i + 3]])
        for i, case in enumerate(cases)
    ]


def test_corpus_diffs_are_the_bytes_of_yjs(
    node_dir: Path, corpus_states: list[tuple[dict[str, Any], list[bytes]]]
) -> None:
    pairs = []
    for i, (case, states) in enumerate(corpus_states):
        full = b64(case["v2"])
        svs = [
            *_state_vectors(case["seed"], full, states, b64(corpus_states[i - 1][0]["v2"])),
            b64(case["partial_sv"]),
        ]
        inputs = [full, b64(case["partial"]), b64(case["merged"]), b64(case["updates_v2"][0])]
        pairs += [(case["seed"], update, sv) for update in inputs for sv in svs]
    assert sum(1 for case, _ in corpus_states if case["seed"] % EXOTIC == 0) == 8
    _compare_diffs(node_dir, pairs)


def test_corpus_diffs_complete_earlier_states(
    node_dir: Path, corpus_states: list[tuple[dict[str, Any], list[bytes]]]
) -> None:
    _check_applied(
        node_dir, [(case["seed"], b64(case["v2"]), states) for case, states in corpus_states]
    )


# --- hand-made updates ---------------------------------------------------------------------


def _sv(*entries: tuple[int, int]) -> bytes:
    out = varuint_bytes(len(entries))
    for client, clock in entries:
        out += varuint_bytes(client) + varuint_bytes(clock)
    return out


def _text(s: str, origin: tuple[int, int] | None = None) -> bytes:
    if origin is None:
        return item(4, vs(s), "text", None)
    return b"\x84" + varuint_bytes(origin[0]) + varuint_bytes(origin[1]) + vs(s)


HANDMADE_V1 = {
    # one client in two separate sections, with an empty section and a Skip
    "sections-apart": update_v1(
        [
            (5, 0, [_text("abcd")]),
            (3, 0, [_text("xy")]),
            (6, 0, []),
            (5, 4, [_text("ef", (5, 3)), b"\x0a\x02", _text("gh", (5, 5))]),
            (5, 20, [b"\x00\x03"]),
        ],
        [(5, [(1, 2)]), (3, [(0, 1)])],
    ),
    "gc-skip-deleted": update_v1(
        [(9, 0, [b"\x00\x04", b"\x0a\x03", item(1, b"\x05", "arr", None), b"\x00\x02"])],
        [(9, [(7, 5)])],
    ),
    # a map entry longer than one: the cut keeps the parentSub bit (Yjs writes no key then)
    "deleted-map-entry": update_v1([(4, 0, [item(1, b"\x03", "map", "k")])], []),
    "values": update_v1(
        [
            (
                2,
                0,
                [
                    item(8, b"\x03\x7d\x01\x77" + vs("é") + b"\x7e", "arr", None),
                    b"\x82\x02\x02\x03" + vs("1") + vs('"a"') + vs("undefined"),
                ],
            )
        ],
        [],
    ),
}
HANDMADE_SVS = [
    _sv(),
    *(_sv((client, clock)) for client in (2, 4, 5, 9) for clock in range(1, 8)),
    _sv((5, 2), (3, 1), (9, 4)),
    _sv((5, 12), (3, 2), (2, 2)),
    _sv((5, 30), (3, 9), (9, 30), (4, 9), (2, 9)),
]


def test_handmade_diffs_are_the_bytes_of_yjs(node_dir: Path) -> None:
    pairs = [(0, v1_to_v2(update), sv) for update in HANDMADE_V1.values() for sv in HANDMADE_SVS]
    # a string cut inside a surrogate pair right after another client's string that ends with
    # a lone high surrogate: the lone halves join in the v2 string column (Yjs does not mend
    # the cut as when it merges)
    joined = encode_v2(
        Update(
            [
                (2, 0, [(STRING, 2, None, None, b"text", None, "x\ud83d")]),
                (1, 0, [(STRING, 8, (2, 1), None, None, None, "\ude00abc😀de")]),
            ],
            {},
        )
    )
    pairs += [(1, joined, _sv((1, clock))) for clock in range(9)]
    _compare_diffs(node_dir, pairs)
    assert "x😀de".encode() in diff_v2(joined, _sv((1, 5)))
