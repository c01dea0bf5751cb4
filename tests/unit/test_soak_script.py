"""scripts/soak.py (the soak benchmark) parses its flags, reads /proc, does its sums and its
probe answers; the soak itself is run by hand (docs/soak.md), never as a timed test."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ysync_soak_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_defaults_follow_the_issue_and_bad_flags_are_refused(soak: ModuleType) -> None:
    args = soak.parse_args([])
    assert (args.minutes, args.clients, args.idle, args.redis, args.probe) == (
        10, 300, 60, None, False)
    assert soak.parse_args(["--trim"]).probe and soak.parse_args(["--tracemalloc", "5"]).probe
    for bad in (["--min-life", "90"], ["--reconnect-share", "2"], ["--server-env", "X"],
                ["--minutes", "0"]):
        with pytest.raises(SystemExit):
            soak.parse_args(bad)


def test_proc_texts_are_read(soak: ModuleType) -> None:
    assert soak.vmrss_kb("Name:\tpython\nVmRSS:\t   53248 kB\nVmSwap: 0 kB\n") == 53248
    assert soak.read_rss_kb(os.getpid()) > 1000
    smaps = ("55d0-55d1 r-xp 00000000 08:01 12 /usr/bin/python3.11\nRss: 900 kB\n"
             "55e0-55f0 rw-p 00000000 00:00 0 [heap]\nRss: 4000 kB\n"
             "7f00-7f10 rw-p 00000000 00:00 0 \nRss: 1024 kB\n"
             "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \nRss: 512 kB\n"
             "7f20-7f30 r-xp 00000000 08:01 13 /lib/libc.so.6\nRss: 100 kB\n"
             "7ff0-7ff1 rw-p 00000000 00:00 0 [stack]\nRss: 8 kB\n")
    kinds = soak.smaps_breakdown(smaps)
    assert (kinds["heap"], kinds["thread_arenas"], kinds["anon"], kinds["files"],
            kinds["other"]) == (4000, 512, 1024, 1000, 8)
    assert kinds["largest_files"] == {"python3.11": 900, "libc.so.6": 100}
    assert soak.parse_metrics('# HELP x\nysync_connections 3.0\nysync_closed{reason="a b"} 2\n'
                              ) == {"ysync_connections": 3.0, 'ysync_closed{reason="a b"}': 2.0}


def test_slope_percentile_and_type_growth(soak: ModuleType) -> None:
    assert soak.slope_per_minute([(0, 10.0), (60, 11.0), (120, 12.0)]) == pytest.approx(1.0)
    assert soak.slope_per_minute([(0, 1.0), (1, 1.0)]) is None
    assert soak.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert soak.percentile([], 0.5) is None
    grown = soak.type_growth({"a": 5, "b": 9}, {"a": 8, "b": 2, "c": 1})
    assert grown == [("a", 8, 3), ("c", 1, 1)]


def test_summary_of_a_run(soak: ModuleType) -> None:
    samples = [soak.Sample(-1, "start", 50 * 1024, 4096, 0, 0, 0)]
    samples += [soak.Sample(t, "churn", (50 + t / 60) * 1024, 5120, 0, 300, 60, 1000 * t)
                for t in range(0, 601, 5)]
    samples += [soak.Sample(660, "idle", 55 * 1024, 5120, 0, 0, 0)]
    tally = soak.Tally(opened=10, closed=10, text_edits=7, map_sets=2, sync_s=[0.1, 0.2])
    tally.error("closed 1013", "c1 closed with 1013")
    summary = soak.summarize(samples, tally, minutes=10)
    server = summary["server"]
    assert (server["start_mb"], server["peak_mb"], server["end_under_load_mb"],
            server["after_idle_mb"], server["after_trim_mb"]) == (50, 60, 60, 55, None)
    assert server["slope_second_half_mb_per_min"] == pytest.approx(1.0)
    assert summary["redis"]["slope_second_half_mb_per_min"] == pytest.approx(0.0)
    assert summary["allocated_kblocks_slope_second_half_per_min"] == pytest.approx(60.0)
    assert summary["updates"]["total"] == 9 and summary["error_count"] == 1
    assert summary["connections_max"] == 300 and summary["connections_at_end"] == 0
    text = soak.format_summary(summary, "title")
    assert "RSS after idle (MB)" in text and "gc + malloc_trim" not in text
    row = next(line for line in text.splitlines() if line.startswith("slope, 2nd half"))
    assert row.split()[-3:] == ["1.00", "0.00", "0.00"]


def test_close_events_are_counted_and_dropped(soak: ModuleType) -> None:
    class Clients:
        events = [{"event": "close", "name": "c1", "code": None},
                  {"event": "status", "name": "c1", "status": "connected"},
                  {"event": "close", "name": "c2", "code": 1013}]

    tally = soak.Tally()
    clients = Clients()
    soak.drain_events(clients, tally)
    assert clients.events == [] and tally.errors == {"closed 1013": 1}
    assert tally.close_codes == {"None": 1, "1013": 1}


def test_the_probe_answers_only_in_a_child_of_the_script(soak: ModuleType,
                                                         tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(soak.PROBE_SOURCE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "YSYNC_SOAK_PROBE_DIR": str(tmp_path),
           "YSYNC_SOAK_PROBE_PARENT": str(os.getpid())}
    # a grandchild (as the server's worker processes are) stays inert
    inert = subprocess.run([sys.executable, "-c", "import threading; "
                            "print(threading.active_count())"], env={
                                **env, "YSYNC_SOAK_PROBE_PARENT": "1"},
                           capture_output=True, text=True, timeout=60, check=True)
    assert inert.stdout.strip() == "1"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        probe = soak.ServerProbe(tmp_path)
        quick = asyncio.run(probe.ask("quick", within=30))
        assert quick["rss_kb"] > 1000 and quick["allocated_blocks"] > 0
        full = asyncio.run(probe.ask("checkpoint", within=30))
        assert full["types"]["builtins.dict"] > 0
        assert full["pymalloc"]["arenas allocated current"] > 0
        trim = asyncio.run(probe.ask("trim", within=30))
        assert trim["after_trim"]["rss_kb"] > 0
        with pytest.raises(RuntimeError, match="unknown probe op"):
            asyncio.run(probe.ask("nope", within=30))
    finally:
        child.kill()
        child.wait(10)


def test_stored_documents_are_measured_by_room(soak: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "room-a" / "index").mkdir(parents=True)
    (tmp_path / "room-b" / "index").mkdir(parents=True)
    (tmp_path / "room-a" / "index" / "1.v2").write_bytes(b"x" * 300)
    (tmp_path / "room-a" / "index" / "2.v2").write_bytes(b"x" * 100)
    (tmp_path / "room-b" / "index" / "1.v2").write_bytes(b"x" * 50)
    assert soak.storage_sizes(tmp_path) == {"files": 3, "bytes": 450, "largest_room_bytes": 400}
    assert soak.storage_sizes(tmp_path / "missing") == {"files": 0, "bytes": 0,
                                                         "largest_room_bytes": 0}
