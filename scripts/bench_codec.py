"""Speed of ysync.updates against yjs's own converters, on one large document.

    .venv/bin/python scripts/bench_codec.py [--mb 5] [--repeat 3] [--seed 1] [--pure]

Builds a document of about ``--mb`` MB (v1) with the real yjs in Node.js (three clients
typing, deleting, formatting; tests/node/updates_bench.mjs), times Yjs converting it both ways,
merging two halves, reading its state vector and diffing it against the first half's state
vector, then times ysync.updates on the same bytes (checking they give the same bytes), and
prints MB/s (of input) for each and the ratio of the times (ysync / yjs). The codec runs as
installed (compiled by mypyc when the build could: ``ysync.updates.COMPILED``), or from its
Python sources with ``--pure``.
Not a test: the numbers depend on the machine. Building the document takes a minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import nodeenv  # noqa: E402
import updates_source  # noqa: E402


def _best(repeat: int, run: Callable[[], bytes]) -> tuple[float, bytes]:
    best = float("inf")
    out = b""
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="size of the document (v1), MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure (best counts)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pure", action="store_true", help="run the codec's Python sources")
    args = parser.parse_args()
    if args.pure:
        updates_source.use_sources()
    import ysync.updates
    from ysync.updates import diff_v2, merge_v2, state_vector_from_v2, v1_to_v2, v2_to_v1

    node_dir = nodeenv.install()
    with tempfile.TemporaryDirectory(prefix="ysync-bench-codec-") as tmp:
        out = Path(tmp)
        print(f"building a {args.mb} MB document with yjs...", flush=True)
        yjs = json.loads(
            subprocess.run(
                [
                    "node",
                    str(node_dir / "updates_bench.mjs"),
                    *("--mb", str(args.mb), "--out", tmp),
                    *("--seed", str(args.seed), "--repeat", str(args.repeat)),
                ],
                check=True,
                capture_output=True,
                timeout=1800,
            ).stdout
        )
        v1 = (out / "doc.v1").read_bytes()
        v2 = (out / "doc.v2").read_bytes()
        parts = [(out / "part0.v2").read_bytes(), (out / "part1.v2").read_bytes()]
        sv_half = (out / "sv_half").read_bytes()
        measures = [
            ("v1 -> v2", len(v1), yjs["v1_to_v2_s"], lambda: v1_to_v2(v1), "yjs.v1_to_v2"),
            ("v2 -> v1", len(v2), yjs["v2_to_v1_s"], lambda: v2_to_v1(v2), "yjs.v2_to_v1"),
            (
                "merge v2",
                sum(map(len, parts)),
                yjs["merge_s"],
                lambda: merge_v2(parts),
                "yjs.merged",
            ),
            ("state vector", len(v2), yjs["sv_s"], lambda: state_vector_from_v2(v2), None),
            ("diff v2", len(v2), yjs["diff_s"], lambda: diff_v2(v2, sv_half), "yjs.diff"),
        ]
        build = "compiled (mypyc)" if ysync.updates.COMPILED else "pure Python"
        print(f"ysync.updates: {build}, Python {sys.version.split()[0]}")
        print(f"document: v1 {len(v1) / 1e6:.2f} MB, v2 {len(v2) / 1e6:.2f} MB")
        print(f"{'':14}{'ysync MB/s':>12}{'yjs MB/s':>12}{'time ratio':>12}  same bytes")
        for name, size, yjs_s, run, expected in measures:
            ours_s, result = _best(args.repeat, run)
            same = "-" if expected is None else str(result == (out / expected).read_bytes())
            print(
                f"{name:14}{size / 1e6 / ours_s:12.1f}{size / 1e6 / yjs_s:12.1f}"
                f"{ours_s / yjs_s:11.1f}x  {same}"
            )


if __name__ == "__main__":
    main()
