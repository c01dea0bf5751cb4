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
    for name in ("fanout", "rooms", "awareness", "idle", "join", "--quick", "--json", "yredis",
                 "--storage", "--no-auth"):
        assert name in done.stdout


def test_defaults_follow_the_brief_and_quick_shrinks_them(load: ModuleType) -> None:
    full = load.parse_args([])
    assert (full.observers, full.rate, full.rooms, full.clients_per_room) == (500, 10, 100, 10)
    assert (full.joiners, full.doc_mb, full.connections) == (100, 5, 1000)
    # issue 11: 300 clients in 30 rooms at 1 Hz
    assert (full.awareness_rooms, full.awareness_clients_per_room, full.awareness_rate) == \
        (30, 10, 1)
    assert full.scenarios == list(load.SCENARIOS)
    assert full.servers == ["ysync", "yredis", "peer"] and full.auth
    assert full.storage == "postgres"
    quick = load.parse_args(["--quick", "join"])
    assert quick.scenarios == ["join"] and quick.joiners < full.joiners
    assert quick.duration < full.duration
    assert quick.awareness_rooms < full.awareness_rooms
    assert quick.servers == full.servers  # a smoke run tries every server


def test_tokens_cover_the_largest_scenario(load: ModuleType) -> None:
    args = load.parse_args(["idle", "awareness"])
    assert load.clients_needed(args) == 1001
    assert load.clients_needed(load.parse_args(["awareness"])) == 300


def test_unknown_scenario_or_server_is_refused(load: ModuleType) -> None:
    with pytest.raises(SystemExit):
        load.parse_args(["fanout", "nope"])
    with pytest.raises(SystemExit):
        load.parse_args(["--servers", "ysync,nope"])
    with pytest.raises(SystemExit):  # named by --baseline REF, not by --servers
        load.parse_args(["--servers", "ysync,baseline"])


def test_y_redis_cannot_run_without_auth(load: ModuleType) -> None:
    with pytest.raises(SystemExit):
        load.parse_args(["--no-auth"])
    assert not load.parse_args(["--no-auth", "--servers", "ysync,peer"]).auth


def test_repeated_runs_report_the_median_of_every_number(load: ModuleType) -> None:
    runs = [{"latency_ms": {"p99": 3.0}, "server_cpu_pct": 10.0, "failures": []},
            {"latency_ms": {"p99": 1.0}, "server_cpu_pct": 30.0, "failures": []},
            {"error": "boom"},
            {"latency_ms": {"p99": 2.0}, "server_cpu_pct": 20.0, "failures": []}]
    merged = load.median_of(runs)
    assert merged["latency_ms"]["p99"] == 2.0 and merged["server_cpu_pct"] == 20.0
    assert merged["runs"] == runs


def test_table_without_y_redis_shows_the_brief_numbers(load: ModuleType) -> None:
    results = {"ysync": {"latency_ms": {"p99": 3.0}}, "peer": {"latency_ms": {"p99": 6.0}}}
    text = load.table("fanout", "fanout", results)
    header = text.splitlines()[1].split()
    assert header == ["metric", "ysync", "y-websocket", "ysync/y-websocket", "y-redis", "(brief)"]
    row = next(line for line in text.splitlines() if line.startswith("latency p99"))
    assert row.split()[-4:] == ["3.00", "6.00", "0.50", "15.0"]


def test_table_with_y_redis_has_a_ratio_column_for_each_server(load: ModuleType) -> None:
    results = {"ysync": {"latency_ms": {"p99": 3.0}, "server_cpu_pct": 20.0,
                         "worker_cpu_pct": 1.0, "redis_cpu_pct": 4.0},
               "yredis": {"latency_ms": {"p99": 2.0}, "server_cpu_pct": 10.0,
                          "worker_cpu_pct": 2.0, "redis_cpu_pct": 4.0},
               "peer": {"latency_ms": {"p99": 6.0}, "server_cpu_pct": 5.0}}
    text = load.table("awareness", "awareness", results, markdown=True)
    lines = text.splitlines()
    assert lines[2] == ("| metric | ysync | y-redis | y-websocket | ysync/y-redis "
                        "| ysync/y-websocket |")
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:]
            for line in lines[4:]}
    assert rows["latency p99 (ms)"] == ["3.00", "2.00", "6.00", "1.50", "0.50"]
    assert rows["server CPU % of a core"] == ["20.0", "10.0", "5.00", "2.00", "4.00"]
    assert rows["worker CPU % of a core"] == ["1.00", "2.00", "-", "0.50", "-"]
    assert rows["redis CPU % of a core"] == ["4.00", "4.00", "-", "1.00", "-"]
    assert "latency p50 (ms)" not in rows  # no server has a number for it
    assert load.ratios("awareness", results)["yredis"]["server_cpu_pct"] == 2.0


def test_cpu_is_reported_per_process(load: ModuleType) -> None:
    import bench_sampling

    start = {"t": 10.0, "cpu": 1.0, "worker": 0.5, "redis": 2.0, "perm": None, "machine": 5.0}
    end = {"t": 20.0, "cpu": 3.0, "worker": 0.6, "redis": 2.5, "perm": None, "machine": 10.0}
    out = bench_sampling.window(start, end)
    assert out["server_cpu_pct"] == pytest.approx(20.0)
    assert out["worker_cpu_pct"] == pytest.approx(1.0)
    assert out["redis_cpu_pct"] == pytest.approx(5.0)
    assert out["stack_cpu_pct"] == pytest.approx(26.0)
    assert "perm_cpu_pct" not in out
    assert bench_sampling.cpu_seconds(start, end)["server_cpu_s"] == pytest.approx(2.0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_process_cpu_comes_from_proc_stat(load: ModuleType) -> None:
    import os

    import bench_sampling

    own = bench_sampling.process_cpu_seconds(os.getpid())
    assert own > 0  # this process imported pytest and the script: more than one clock tick
    assert bench_sampling.tree_cpu_seconds(os.getpid()) >= own


def test_a_missing_y_redis_is_skipped_with_the_reason(load: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import bench_stack

    monkeypatch.delenv("YSYNC_YREDIS_PEER", raising=False)
    folder, why = bench_stack.locate_yredis(setup=tmp_path / "no-such-setup")
    assert folder is None
    assert "YSYNC_YREDIS_PEER" in why and "no-such-setup" in why


def test_one_key_pair_signs_a_token_per_client(load: ModuleType, tmp_path: Path) -> None:
    import json

    import bench_stack

    auth = bench_stack.Auth(tmp_path, users=3)  # not entered: no permission endpoint started
    tokens = json.loads(auth.tokens_file.read_text())
    assert len(set(tokens)) == 3
    settings = auth.settings()
    assert set(settings) == {"AUTH_PUBLIC_KEY", "AUTH_PRIVATE_KEY", "AUTH_PERM_CALLBACK"}
    assert json.loads(settings["AUTH_PUBLIC_KEY"])["crv"] == "P-384"


def test_py_spy_stacks_are_summarized(load: ModuleType, tmp_path: Path) -> None:
    import bench_sampling  # scripts/load/, put on sys.path by scripts/load.py

    raw = tmp_path / "stacks.txt"
    raw.write_text("main (ysync/cli.py:1);send (websockets/protocol.py:9) 3\n"
                   "main (ysync/cli.py:1);merge (ysync/bus.py:5) 1\n")
    summary = bench_sampling.summarize_stacks(raw)
    assert "4 samples" in summary
    assert "75.0%  send websockets/protocol.py" in summary
    assert "100.0%  main ysync/cli.py" in summary
