"""Helpers of the update codec interop tests (ysync.updates against the real yjs).

Test vectors come from ``tests/node/updates_gen.mjs`` (random documents edited by several
clients, see ``tests/node/updates_docs.mjs``): a committed corpus, and fresh ones generated
while the tests run. ``tests/node/updates_oracle.mjs`` asks yjs about our outputs.

Regenerate the committed corpus (needs node and npm) with::

    .venv/bin/python tests/interop/test_updates_support.py --regenerate
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from ysync.updates import merge_v2, state_vector_from_v2, v1_to_v2, v2_to_v1

CORPUS = Path(__file__).parent / "fixtures" / "updates" / "corpus.jsonl.gz"
#: The arguments of updates_gen.mjs the corpus was made with.
CORPUS_ARGS = ["--from", "1", "--count", "32", "--ops", "40", "--sample", "6"]
#: Per case, a generated document is "exotic" (seed % 4 == 0) when it holds things pycrdt
#: cannot read (see updates_docs.mjs).
EXOTIC = 4


def b64(data: str) -> bytes:
    return base64.b64decode(data)


def load_corpus() -> list[dict[str, Any]]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def generate(node_dir: Path, args: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    """Run updates_gen.mjs with ``args``; return its cases."""
    out = subprocess.run(
        ["node", str(node_dir / "updates_gen.mjs"), *args],
        check=True,
        capture_output=True,
        timeout=timeout,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ask_yjs(node_dir: Path, requests: list[dict[str, Any]], timeout: float = 120) -> list[Any]:
    """Send requests to updates_oracle.mjs; return its answers (dicts), in order."""
    text = "".join(json.dumps(r) + "\n" for r in requests)
    out = subprocess.run(
        ["node", str(node_dir / "updates_oracle.mjs")],
        input=text.encode(),
        check=True,
        capture_output=True,
        timeout=timeout,
    ).stdout
    answers = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(answers) == len(requests)
    return answers


def enc(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_against_yjs_outputs(case: dict[str, Any]) -> None:
    """Every conversion of ours is byte for byte what yjs produced for the same input."""
    seed = case["seed"]
    v1, v2 = b64(case["v1"]), b64(case["v2"])
    assert v1_to_v2(v1) == b64(case["v1_to_v2"]), seed
    assert v2_to_v1(v2) == b64(case["v2_to_v1"]), seed
    assert state_vector_from_v2(v2) == b64(case["sv"]), seed
    updates = [b64(u) for u in case["updates_v2"]]
    assert merge_v2(updates) == b64(case["merged"]), seed
    partial = b64(case["partial"])
    assert v2_to_v1(partial) == b64(case["partial_v1"]), seed
    assert state_vector_from_v2(partial) == b64(case["partial_sv"]), seed
    for u1, u2 in zip(case["updates_v1"], case["updates_v1_to_v2"], strict=True):
        assert v1_to_v2(b64(u1)) == b64(u2), seed
    # Round trips are the identity on what the converters write (Yjs itself normalizes once,
    # e.g. it drops the parentSub bit of an item that has an origin).
    yjs_v1 = b64(case["v2_to_v1"])
    assert v2_to_v1(v1_to_v2(yjs_v1)) == yjs_v1, seed
    yjs_v2 = b64(case["v1_to_v2"])
    assert v1_to_v2(v2_to_v1(yjs_v2)) == yjs_v2, seed
    for u in [*updates, partial]:
        once = v1_to_v2(v2_to_v1(u))
        assert v1_to_v2(v2_to_v1(once)) == once, seed


# --- comparing documents: pycrdt's view against the JSON yjs gave (updates_docs.mjs) -------


def _lone_to_fffd(text: str) -> str:
    # a JavaScript string may hold lone surrogates; stored as UTF-8 they become U+FFFD
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _number(value: float) -> Any:
    # pycrdt reads numbers of JSON text (formatting attributes, embeds) a last bit off
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(f"{value:.12g}")


def _bigint(value: int) -> Any:
    # pycrdt gives a BigInt as a float when a float holds it, and JSON integers as int
    return _number(float(value)) if abs(value) <= 2**53 else {"bigint": value}


def from_yjs(value: Any) -> Any:
    """Normalize a value of updates_docs.mjs ``docJson`` for comparison with pycrdt."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _lone_to_fffd(value)
    if isinstance(value, list):
        return [from_yjs(v) for v in value]
    (tag, inner), *rest = value.items()
    if tag == "text" or tag == "xmltext":
        return {tag: _delta([(d["insert"], d.get("attributes")) for d in inner], from_yjs)}
    if tag == "number":
        return _number(float(inner))
    if tag == "bigint":
        return _bigint(int(inner))
    if tag == "undefined":
        return None
    if tag == "bin":
        return {"bin": inner}
    if tag == "object":
        return {"object": sorted((_lone_to_fffd(k), from_yjs(v)) for k, v in inner)}
    if tag == "map":
        return {"map": sorted((_lone_to_fffd(k), from_yjs(v)) for k, v in inner)}
    if tag == "array":
        return {"array": [from_yjs(v) for v in inner]}
    if tag == "fragment":
        return {"fragment": [from_yjs(v) for v in inner]}
    if tag == "element":
        attrs = dict(rest)["attrs"]
        children = dict(rest)["children"]
        return {
            "element": inner,
            "attrs": sorted((k, from_yjs(v)) for k, v in attrs),
            "children": [from_yjs(c) for c in children],
        }
    if tag == "doc":
        return {"doc": inner}
    raise AssertionError(f"unexpected tag {tag}")


def _delta(ops: list[tuple[Any, Any]], convert: Any) -> list[Any]:
    merged: list[list[Any]] = []
    for insert, attrs in ops:
        value = convert(insert)
        attributes = {k: convert(v) for k, v in (attrs or {}).items() if v is not None}
        if merged and isinstance(value, str) and isinstance(merged[-1][0], str):
            if merged[-1][1] == attributes:
                merged[-1][0] += value
                continue
        merged.append([value, attributes])
    return merged


def from_pycrdt(value: Any) -> Any:
    """Normalize a pycrdt value like :func:`from_yjs` does with yjs's."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        return _bigint(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return {"bin": list(value)}
    if isinstance(value, list):
        return [from_pycrdt(v) for v in value]
    if isinstance(value, dict):
        return {"object": sorted((k, from_pycrdt(v)) for k, v in value.items())}
    if isinstance(value, XmlText):
        return {"xmltext": _delta(value.diff(), from_pycrdt)}
    if isinstance(value, Text):
        return {"text": _delta(value.diff(), from_pycrdt)}
    if isinstance(value, XmlElement):
        return {
            "element": value.tag,
            "attrs": sorted((k, from_pycrdt(v)) for k, v in value.attributes),
            "children": [from_pycrdt(c) for c in value.children],
        }
    if isinstance(value, XmlFragment):
        return {"fragment": [from_pycrdt(c) for c in value.children]}
    if isinstance(value, Map):
        return {"map": sorted((k, from_pycrdt(v)) for k, v in value.items())}
    if isinstance(value, Array):
        return {"array": [from_pycrdt(v) for v in value]}
    if isinstance(value, Doc):
        return {"doc": value.guid}
    raise AssertionError(f"unexpected pycrdt value {value!r}")


def pycrdt_view(*updates_v1: bytes) -> dict[str, Any]:
    """The four root types of the document the v1 updates build in pycrdt, normalized."""
    doc: Doc = Doc()
    for update in updates_v1:
        doc.apply_update(update)
    return {
        "text": from_pycrdt(doc.get("text", type=Text)),
        "map": from_pycrdt(doc.get("map", type=Map)),
        "arr": from_pycrdt(doc.get("arr", type=Array)),
        "xml": from_pycrdt(doc.get("xml", type=XmlFragment)),
    }


def yjs_view(doc_json: dict[str, Any]) -> dict[str, Any]:
    return {root: from_yjs(doc_json[root]) for root in ("text", "map", "arr", "xml")}


_NEGATIVE_ZERO = {"number": "-0"}


def without_negative_zero(doc_json: Any) -> Any:
    """A docJson with -0 as 0: JSON (the v1 form of embeds and formatting) has no -0."""
    if doc_json == _NEGATIVE_ZERO:
        return 0
    if isinstance(doc_json, list):
        return [without_negative_zero(v) for v in doc_json]
    if isinstance(doc_json, dict):
        return {k: without_negative_zero(v) for k, v in doc_json.items()}
    return doc_json


def _regenerate() -> None:
    tests = Path(__file__).parents[1]
    sys.path.insert(0, str(tests))
    import nodeenv

    node_dir = nodeenv.install()
    out = subprocess.run(
        ["node", str(node_dir / "updates_gen.mjs"), *CORPUS_ARGS],
        check=True,
        capture_output=True,
        timeout=600,
    ).stdout
    CORPUS.parent.mkdir(parents=True, exist_ok=True)
    CORPUS.write_bytes(gzip.compress(out, compresslevel=9, mtime=0))
    print(f"wrote {CORPUS} ({len(out.splitlines())} cases)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(__doc__)
    _regenerate()
