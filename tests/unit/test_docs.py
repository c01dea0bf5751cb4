"""Building documents from their sources (ysync.docs), pure: what joiners and the worker get."""

from __future__ import annotations

from typing import Any

import pycrdt

from ysync.docs import DocSources, build_from_sources, compact_sources
from ysync.protocol import encode_sync_update
from ysync.streams import ZERO_ID
from ysync.updates import v2_to_v1


def _updates() -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    text = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(bytes(event.update)))
    for ch in "xyz":
        text += ch
    doc.unobserve(sub)
    return updates


def _sources(updates: list[bytes], snapshot: bytes | None = None) -> DocSources:
    return DocSources([encode_sync_update(u) for u in updates], ZERO_ID,
                      snapshot, () if snapshot is None else ("ref",))


def _text(update_v1: bytes) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update_v1)
    return str(doc.get("t", type=pycrdt.Text))


def test_an_update_waiting_for_a_missing_one_is_persisted_not_dropped() -> None:
    x, y, z = _updates()
    snapshot = compact_sources(_sources([x, z]))  # z waits for y
    assert snapshot is not None
    assert compact_sources(_sources([], snapshot)) is None  # nothing new
    built = build_from_sources(_sources([y], snapshot))
    assert built.changed
    assert _text(built.full_update) == "xyz"
    later = compact_sources(_sources([y], snapshot))
    assert later is not None and _text(v2_to_v1(later)) == "xyz"


def test_a_joiner_gets_the_bytes_the_writer_sent() -> None:
    (only,) = _updates()[:1]
    built = build_from_sources(_sources([only]))
    assert built.full_update == only
