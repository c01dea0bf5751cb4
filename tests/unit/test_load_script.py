"""scripts/load.py (the load benchmark) imports, parses its flags and formats its report.

The benchmark itself is run by hand (docs/benchmarks.md): speed is compared side by side with a
peer server in one run, never asserted by a timed test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "load.py"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ysync_load_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_help_lists_every_scenario() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for name in ("fanout", "rooms", "idle", "join", "--quick", "--json"):
        assert name in done.stdout


def test_defaults_follow_the_brief_and_quick_shrinks_them(load: ModuleType) -> None:
    full = load.parse_args([])
    assert (full.observers, full.rate, full.rooms, full.clients_per_room) == (500, 10, 100, 10)
    assert (full.joiners, full.doc_mb, full.connections) == (100, 5, 1000)
    assert full.scenarios == list(load.SCENARIOS)
    quick = load.parse_args(["--quick", "join"])
    assert quick.scenarios == ["join"] and quick.joiners < full.joiners
    assert quick.duration < full.duration


def test_unknown_scenario_or_server_is_refused(load: ModuleType) -> None:
    with pytest.raises(SystemExit):
        load.parse_args(["fanout", "nope"])
    with pytest.raises(SystemExit):
        load.parse_args(["--servers", "ysync,y-redis"])


def test_repeated_runs_report_the_median_of_every_number(load: ModuleType) -> None:
    runs = [{"latency_ms": {"p99": 3.0}, "server_cpu_pct": 10.0, "failures": []},
            {"latency_ms": {"p99": 1.0}, "server_cpu_pct": 30.0, "failures": []},
            {"error": "boom"},
            {"latency_ms": {"p99": 2.0}, "server_cpu_pct": 20.0, "failures": []}]
    merged = load.median_of(runs)
    assert merged["latency_ms"]["p99"] == 2.0 and merged["server_cpu_pct"] == 20.0
    assert merged["runs"] == runs


def test_table_has_ratio_and_reference_columns(load: ModuleType) -> None:
    results = {"ysync": {"latency_ms": {"p99": 3.0}}, "peer": {"latency_ms": {"p99": 6.0}}}
    text = load.table("fanout", "fanout", results)
    row = next(line for line in text.splitlines() if line.startswith("latency p99"))
    assert row.split()[-4:] == ["3.00", "6.00", "0.50", "15.0"]


def test_py_spy_stacks_are_summarized(load: ModuleType, tmp_path: Path) -> None:
    import bench_sampling  # scripts/load/, put on sys.path by scripts/load.py

    raw = tmp_path / "stacks.txt"
    raw.write_text("main (ysync/cli.py:1);send (websockets/protocol.py:9) 3\n"
                   "main (ysync/cli.py:1);merge (ysync/bus.py:5) 1\n")
    summary = bench_sampling.summarize_stacks(raw)
    assert "4 samples" in summary
    assert "75.0%  send websockets/protocol.py" in summary
    assert "100.0%  main ysync/cli.py" in summary
