"""Compaction snapshots (ysync.updates.document) against a garbage-collected Y.Doc, in Node.js.

For documents with heavy deletes (text typed and mostly deleted, map keys overwritten, nested
types deleted with their parents) and random multi-client scenarios, the snapshot ysync's worker
writes decodes in Yjs to the writers' document (every shared type, key order included, and the
state vector), is no larger than 1.05x of what y-redis's worker persists (a gc'd Y.Doc's
``encodeStateAsUpdateV2``), and keeps the content of every live struct as Yjs wrote it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from interop.test_updates_support import b64, enc

from ysync.updates import v1_to_v2
from ysync.updates.document import assemble, compact
from ysync.updates.structs import DELETED, GC, SKIP
from ysync.updates.v2 import decode_v2

pytestmark = pytest.mark.node


def _node(node_dir: Path, args: list[str], stdin: str = "") -> list[dict[str, Any]]:
    out = subprocess.run(
        ["node", str(node_dir / "updates_gc.mjs"), *args], input=stdin.encode(),
        check=True, capture_output=True, timeout=180,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cases(node_dir: Path) -> list[dict[str, Any]]:
    """Even seeds: heavy deletes; odd seeds: random scenarios of three clients."""
    return _node(node_dir, ["gen", "--from", "1", "--count", "12"])


@pytest.fixture(scope="module")
def snapshots(cases: list[dict[str, Any]]) -> list[bytes]:
    return [compact(assemble(None, [b64(u) for u in case["updates"]])) for case in cases]


def test_snapshots_decode_to_the_writers_document(
    node_dir: Path, cases: list[dict[str, Any]], snapshots: list[bytes]
) -> None:
    views = _node(node_dir, ["read"], "\n".join(json.dumps({"v2": enc(s)}) for s in snapshots))
    assert len(views) == len(cases)
    for case, view in zip(cases, views, strict=True):
        assert view["sv"] == case["expected"]["sv"], f"seed {case['seed']}: state vector"
        for name, expected in case["expected"]["json"].items():
            assert view["json"][name] == expected, f"seed {case['seed']}: root {name!r}"


def test_snapshots_are_no_larger_than_a_gc_ydoc(
    cases: list[dict[str, Any]], snapshots: list[bytes]
) -> None:
    for case, snapshot in zip(cases, snapshots, strict=True):
        assert len(snapshot) <= 1.05 * case["yredis_size"], (
            f"seed {case['seed']}: {len(snapshot)} bytes vs {case['yredis_size']}")


def test_heavy_deletes_are_collected(
    cases: list[dict[str, Any]], snapshots: list[bytes]
) -> None:
    """The snapshot is much smaller than the updates and no deleted item keeps its content."""
    for case, snapshot in zip(cases, snapshots, strict=True):
        if case["seed"] % 2:
            continue
        merged = assemble(None, [b64(u) for u in case["updates"]]).update
        raw = sum(len(v1_to_v2(b64(u))) for u in case["updates"])
        assert len(snapshot) < raw / 3, f"seed {case['seed']}"
        collected = decode_v2(snapshot)
        kinds = {s[0] for _, _, structs in collected.sections for s in structs}
        assert GC in kinds and DELETED in kinds and SKIP not in kinds
        ds = collected.delete_set
        for client, clock, structs in collected.sections:
            for struct in structs:
                if struct[0] not in (GC, DELETED):
                    ranges = ds.get(client, [])
                    assert not any(start < clock + struct[1] and clock < start + n
                                   for start, n in zip(ranges[0::2], ranges[1::2], strict=True))
                clock += struct[1]
        assert len(merged.sections) == len(collected.sections)
