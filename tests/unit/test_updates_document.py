"""Assembling a document from snapshot + stream (ysync.updates.document), pure."""

from __future__ import annotations

from typing import Any

import pycrdt

from ysync.updates import v1_to_v2, v2_to_v1
from ysync.updates.diff import decode_state_vector
from ysync.updates.document import assemble, compact, full_v1, state_vector


def _typed(text: str, client_id: int = 7) -> list[bytes]:
    """The updates of a client typing ``text`` one character per transaction."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    ytext = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(bytes(event.update)))
    for ch in text:
        ytext += ch
    doc.unobserve(sub)
    return updates


def _text_of(update_v1: bytes) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update_v1)
    return str(doc.get("t", type=pycrdt.Text))


def test_pending_updates_are_kept_through_compaction() -> None:
    u1, u2, u3 = _typed("abc")
    first = assemble(None, [u1, u3])  # u3 depends on u2, which is missing
    assert first.changed
    assert decode_state_vector(state_vector(first.update)) == {7: 1}  # u3 is pending
    snapshot = compact(first)
    again = assemble(snapshot, [])
    assert not again.changed
    later = assemble(snapshot, [u2])
    assert later.changed
    assert _text_of(full_v1(later)) == "abc"
    assert decode_state_vector(state_vector(later.update)) == {7: 3}


def test_an_update_the_snapshot_holds_changes_nothing() -> None:
    updates = _typed("hello")
    snapshot = compact(assemble(None, updates))
    assert not assemble(snapshot, updates[1:3]).changed
    assert assemble(snapshot, [*updates, *_typed("x", client_id=9)]).changed


def test_deletions_alone_count_as_a_change() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=3)
    text = doc.get("t", type=pycrdt.Text)
    text += "hello world"
    snapshot = v1_to_v2(doc.get_update())
    before = doc.get_state()
    del text[0:6]
    deletion = doc.get_update(before)
    assembled = assemble(snapshot, [deletion])
    assert assembled.changed
    assert _text_of(v2_to_v1(compact(assembled))) == "world"


def test_undecodable_stream_updates_are_counted_and_left_out() -> None:
    updates = _typed("ab")
    assembled = assemble(None, [updates[0], b"\x01\x02", updates[1]])
    assert assembled.invalid == 1
    assert _text_of(full_v1(assembled)) == "ab"


def test_nothing_gives_the_empty_document() -> None:
    assembled = assemble(None, [])
    assert not assembled.changed
    assert full_v1(assembled) == b"\x00\x00"
    assert state_vector(assembled.update) == b"\x00"
