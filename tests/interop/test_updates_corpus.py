"""ysync.updates against the committed corpus of yjs test vectors (no Node.js needed).

The corpus (fixtures/updates/corpus.jsonl.gz) was written by tests/node/updates_gen.mjs with
the real yjs; see test_updates_support.py to regenerate it.
"""

from __future__ import annotations

from typing import Any

import pytest
from interop.test_updates_support import (
    EXOTIC,
    b64,
    check_against_yjs_outputs,
    load_corpus,
    pycrdt_view,
    yjs_view,
)

from ysync.updates import v1_to_v2, v2_to_v1

CASES = load_corpus()


def _id(case: dict[str, Any]) -> str:
    return f"seed{case['seed']}"


def test_corpus_is_complete() -> None:
    assert len(CASES) == 32
    assert sum(1 for c in CASES if c["seed"] % EXOTIC == 0) == 8


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_conversions_match_yjs_bytes(case: dict[str, Any]) -> None:
    check_against_yjs_outputs(case)


@pytest.mark.parametrize("case", [c for c in CASES if c["seed"] % EXOTIC], ids=_id)
def test_pycrdt_reads_the_document_yjs_had(case: dict[str, Any]) -> None:
    expected = yjs_view(case["json"])
    assert pycrdt_view(v2_to_v1(b64(case["v2"]))) == expected
    assert pycrdt_view(v2_to_v1(v1_to_v2(b64(case["v1"])))) == expected
