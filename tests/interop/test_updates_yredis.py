"""ysync.updates reads the snapshots the JavaScript y-redis 0.1.6 worker wrote.

The rows of fixtures/y-redis-0.1.6/postgres-snapshots.jsonl (beside this file, see its
README.md) hold the document as a Yjs v2 update, its state vector, and what a fresh
y-websocket client saw of it afterwards.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlFragment

from ysync.updates import merge_v2, state_vector_from_v2, v1_to_v2, v2_to_v1

FIXTURES = Path(__file__).parent / "fixtures" / "y-redis-0.1.6" / "postgres-snapshots.jsonl"
ROWS = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


def _doc(update_v1: bytes) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(update_v1)
    return doc


def _view(doc: Doc) -> dict[str, Any]:
    return {
        "text": doc.get("text", type=Text).diff(),
        "map": doc.get("map", type=Map).to_py(),
        "arr": doc.get("arr", type=Array).to_py(),
        "xml": str(doc.get("xml", type=XmlFragment)),
    }


def _binary_as_object(value: Any) -> Any:
    """Binary as the fixture's JSON has it (``{"0": 1, ...}``); numbers compare as they are."""
    if isinstance(value, bytes | bytearray):
        return {str(i): b for i, b in enumerate(value)}
    if isinstance(value, dict):
        return {k: _binary_as_object(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_binary_as_object(v) for v in value]
    return value


def test_fixture_rows_are_there() -> None:
    assert {row["doc"] for row in ROWS} == {"index"}
    assert len(ROWS) == 4


@pytest.mark.parametrize("row", ROWS, ids=[r["room"] for r in ROWS])
def test_snapshot_is_the_document_clients_saw(row: dict[str, Any]) -> None:
    update_v2 = base64.b64decode(row["update_v2_b64"])
    expected = row["expected"]
    ours = _doc(v2_to_v1(update_v2))
    theirs = _doc(base64.b64decode(expected["state_as_update_v1_b64"]))
    assert _view(ours) == _view(theirs)
    view = _view(ours)
    assert view["text"] == [(op["insert"], op.get("attributes")) for op in expected["text"]]
    assert _binary_as_object(view["map"]) == expected["map"]
    assert view["arr"] == expected["arr"]
    assert view["xml"] == expected["xml"]


@pytest.mark.parametrize("row", ROWS, ids=[r["room"] for r in ROWS])
def test_state_vector_is_the_stored_one(row: dict[str, Any]) -> None:
    update_v2 = base64.b64decode(row["update_v2_b64"])
    assert state_vector_from_v2(update_v2) == base64.b64decode(row["sv_b64"])


@pytest.mark.parametrize("row", ROWS, ids=[r["room"] for r in ROWS])
def test_snapshot_round_trips(row: dict[str, Any]) -> None:
    update_v2 = base64.b64decode(row["update_v2_b64"])
    v1 = v2_to_v1(update_v2)
    assert v2_to_v1(v1_to_v2(v1)) == v1
    # a snapshot merged with the client's own state is still that document
    client_v2 = v1_to_v2(base64.b64decode(row["expected"]["state_as_update_v1_b64"]))
    merged = merge_v2([update_v2, client_v2])
    assert _view(_doc(v2_to_v1(merged))) == _view(_doc(v1))
    assert state_vector_from_v2(merged) == state_vector_from_v2(update_v2)
