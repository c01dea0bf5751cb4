#!/usr/bin/env python3
"""Soak benchmark: churn of real y-websocket clients for minutes, with the server's RSS sampled.

Starts ``ysync serve`` (the embedded default: its own redis-server, filesystem storage, the
worker in-process; or an external Redis with ``--redis URL``), then for ``--minutes`` keeps
``--clients`` real y-websocket clients (``WebsocketProvider`` from npm, run by
``tests/node/client.mjs``) busy across ``--rooms`` rooms: each connects, syncs, sets its
awareness, edits (text inserts and deletes, map sets, awareness changes) at random intervals,
then leaves (or drops and reconnects) after a random lifetime, and a new client takes its place.
Every few seconds it samples VmRSS of the server, of its redis-server and of its other child
processes, and the server's connection and room gauges (``/metrics``). At the end every client
leaves, the script waits ``--idle`` seconds (the worker compacts meanwhile) and samples again.
It prints a summary (RSS start, peak, end under load, after idle, slope over the second half)
and writes every sample with ``--json``. A measurement, not a test (``docs/soak.md``)::

    .venv/bin/python scripts/soak.py                           # 300 clients, 10 minutes
    .venv/bin/python scripts/soak.py --minutes 2 --clients 100 --json soak.json
    .venv/bin/python scripts/soak.py --probe --trim --server-env MALLOC_ARENA_MAX=2

``--probe`` puts a small ``sitecustomize`` in the server process only (no change to ysync): a
thread that answers the script with ``sys.getallocatedblocks()``, glibc's ``mallinfo2``, object
counts by type, pymalloc's arena statistics, tracemalloc diffs (``--tracemalloc N``) and, with
``--trim``, ``gc.collect()`` + ``malloc_trim(0)`` after the idle wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
for _folder in ("tests", "scripts", "scripts/load"):
    sys.path.insert(0, str(ROOT / _folder))

# the load benchmark's helpers (scripts/load.py, scripts/load/) and the test suite's drivers
from bench_sampling import machine_info  # noqa: E402
from bench_servers import delete_prefix, redis_answers  # noqa: E402
from load import raise_fd_limit, source_info  # noqa: E402

import nodeenv  # noqa: E402  (tests/nodeenv.py: the npm yjs / y-websocket the tests use)
from harness import NodeClients, ServerProcess  # noqa: E402  (tests/harness.py)

MB = 1024 * 1024  # RSS is read in KiB: MB here means MiB
#: glibc's HEAP_MAX_SIZE on 64-bit: a non-main arena's heap is mapped at a multiple of it
GLIBC_HEAP_MAX = 64 * MB
#: close codes of a client that closed itself (y-websocket reports no code when it closed the
#: socket itself, on destroy / disconnect): anything else is an error
NORMAL_CLOSES = {None, 1000, 1005}

# --- the probe in the server process -------------------------------------------------------------

#: Written as ``sitecustomize.py`` into a folder put on the server's PYTHONPATH. Inert in every
#: process but the server itself (its parent must be this script), so the server's worker
#: processes do not run it. Commands are files ``cmd-N.json``; answers ``out-N.json``.
PROBE_SOURCE = r'''
"""scripts/soak.py's probe: answers memory questions inside the ysync server process."""
import os
import sys


def _rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


_MALLINFO = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
             "uordblks", "fordblks", "keepcost")
_LIBC = []


def _libc():
    if not _LIBC:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO]

        libc = ctypes.CDLL(None)
        if hasattr(libc, "mallinfo2"):
            libc.mallinfo2.restype = MallInfo2
        _LIBC.append(libc)
    return _LIBC[0]


def _mallinfo():
    libc = _libc()
    if not hasattr(libc, "mallinfo2"):
        return {}
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name in _MALLINFO}


def _quick():
    import gc
    return {"rss_kb": _rss_kb(), "allocated_blocks": sys.getallocatedblocks(),
            "gc_count": list(gc.get_count()), "mallinfo": _mallinfo()}


def _types():
    import gc
    counts = {}
    for obj in gc.get_objects():
        kind = type(obj)
        key = f"{getattr(kind, '__module__', '?')}.{kind.__qualname__}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _pymalloc():
    import tempfile
    with tempfile.TemporaryFile(mode="w+") as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    stats = {}
    for line in text.splitlines():  # the first "Total" is the bytes of the arenas
        if line.startswith(("# arenas", "# bytes in", "Total")):
            key, _, value = line.partition("=")
            key = key.strip("# ").strip()
            if key not in stats:
                stats[key] = int(value.strip().replace(",", "") or 0)
    return stats


def _tracemalloc(state, name, bases, top):
    """Traced memory now, and what grew by line since each checkpoint in ``bases``; for the
    lines that grew most, the stacks that hold most of their memory now. Only the totals by
    line are kept (whole snapshots would be most of the memory measured)."""
    import tracemalloc
    if not tracemalloc.is_tracing():
        return {}
    snapshot = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>")])
    lines = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        lines[f"{frame.filename}:{frame.lineno}"] = (stat.size, stat.count)
    totals = state.setdefault("lines", {})
    _current, peak = tracemalloc.get_traced_memory()  # the probe's own memory included
    out = {"traced_kb": sum(size for size, _count in lines.values()) // 1024,
           "traced_peak_kb": peak // 1024, "since": {}}
    for base_name in bases:
        base = totals.get(base_name)
        if base is None:
            continue
        grown = []
        for where in set(lines) | set(base):
            size, count = lines.get(where, (0, 0))
            old_size, old_count = base.get(where, (0, 0))
            grown.append({"where": where, "size_diff_kb": (size - old_size) / 1024,
                          "count_diff": count - old_count, "size_kb": size / 1024})
        grown.sort(key=lambda g: -g["size_diff_kb"])
        out["since"][base_name] = {"grew": grown[:top], "shrank": grown[::-1][:top]}
    stacks = []
    by_stack = snapshot.statistics("traceback")
    for where in [g["where"] for g in next(iter(out["since"].values()), {"grew": []})["grew"][:5]]:
        held = [s for s in by_stack
                if f"{s.traceback[0].filename}:{s.traceback[0].lineno}" == where][:2]
        stacks += [{"line": where, "size_kb": s.size / 1024, "count": s.count,
                    "stack": [f"{f.filename}:{f.lineno}" for f in s.traceback]} for s in held]
    out["stacks"] = stacks
    totals[name] = lines
    del snapshot, by_stack
    return out


def _answer(command, state):
    import gc
    op = command["op"]
    if op == "quick":
        return _quick()
    if op == "checkpoint":
        out = _quick()
        out["types"] = _types()
        out["pymalloc"] = _pymalloc()
        out["tracemalloc"] = _tracemalloc(state, command.get("name", "?"),
                                          command.get("bases", []), command.get("top", 25))
        return out
    if op == "trim":
        before = _quick()
        collected = gc.collect()
        after_gc = _quick()
        released = _libc().malloc_trim(0)
        return {"before": before, "gc_collected": collected, "after_gc": after_gc,
                "malloc_trim_released": bool(released), "after_trim": _quick()}
    raise ValueError(f"unknown probe op {op!r}")


def _serve(folder):
    import json
    import time
    state = {}
    while True:
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("cmd-") and name.endswith(".json")):
                continue
            path = os.path.join(folder, name)
            with open(path) as file:
                command = json.load(file)
            os.remove(path)
            try:
                answer = {"ok": True, "result": _answer(command, state)}
            except Exception as exc:  # reported to the script, which shows it
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out = os.path.join(folder, "out-" + name[4:])
            with open(out + ".tmp", "w") as file:
                json.dump(answer, file)
            os.replace(out + ".tmp", out)
        time.sleep(0.1)


def _start():
    folder = os.environ.get("YSYNC_SOAK_PROBE_DIR")
    if not folder or os.environ.get("YSYNC_SOAK_PROBE_PARENT") != str(os.getppid()):
        return
    frames = int(os.environ.get("YSYNC_SOAK_TRACEMALLOC") or 0)
    if frames:
        import tracemalloc
        tracemalloc.start(frames)
    import threading
    threading.Thread(target=_serve, args=(folder,), daemon=True, name="soak-probe").start()


_start()
'''


class ServerProbe:
    """The script's side of the probe: one command file, one answer file, with a deadline."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ids = itertools.count(1)
        self._abandoned: list[Path] = []  # answers that came too late

    async def ask(self, op: str, within: float = 120, **args: Any) -> dict[str, Any]:
        n = next(self._ids)
        command = self.folder / f"cmd-{n:05d}.json"
        tmp = self.folder / f"tmp-{n:05d}"
        tmp.write_text(json.dumps({"op": op, **args}))
        tmp.replace(command)  # the probe never sees half a file
        answer = self.folder / f"out-{n:05d}.json"
        deadline = time.monotonic() + within
        while not answer.exists():
            if time.monotonic() > deadline:
                with contextlib.suppress(FileNotFoundError):
                    command.unlink()  # not taken yet: withdrawn
                self._abandoned.append(answer)
                raise TimeoutError(f"the server's probe did not answer {op!r} in {within} s")
            await asyncio.sleep(0.05)
        for late in [a for a in self._abandoned if a.exists()]:
            late.unlink()
            self._abandoned.remove(late)
        reply = json.loads(answer.read_text())
        answer.unlink()
        if not reply["ok"]:
            raise RuntimeError(f"probe {op}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result


# --- reading processes (pure parts first) --------------------------------------------------------


def vmrss_kb(status_text: str) -> int:
    """VmRSS of a /proc/<pid>/status text, in KiB (0 if absent)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def read_rss_kb(pid: int) -> int:
    try:
        return vmrss_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0


def read_smaps(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None


def smaps_breakdown(smaps_text: str, top: int = 6) -> dict[str, Any]:
    """RSS of a /proc/<pid>/smaps text in KiB, by kind of mapping: ``heap`` (brk: glibc's main
    arena), ``thread_arenas`` (glibc's other arenas: anonymous heaps at 64 MiB-aligned
    addresses), ``anon`` (other anonymous mmaps: pymalloc's 1 MiB arenas, large blocks, thread
    stacks), ``files`` (code and data of the executable and shared libraries, the largest
    listed), ``other`` (stack, vdso)."""
    kinds = {"heap": 0, "thread_arenas": 0, "anon": 0, "files": 0, "other": 0}
    by_file: Counter[str] = Counter()
    where, start = "", 0
    for line in smaps_text.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            where = head[5].strip() if len(head) > 5 else ""
            start = int(head[0].split("-")[0], 16)
            continue
        if not line.startswith("Rss:"):
            continue
        kb = int(line.split()[1])
        if where == "[heap]":
            kinds["heap"] += kb
        elif where == "":
            kinds["thread_arenas" if start % GLIBC_HEAP_MAX == 0 else "anon"] += kb
        elif where.startswith("["):
            kinds["other"] += kb
        else:
            kinds["files"] += kb
            by_file[Path(where).name] += kb
    return {**kinds, "largest_files": dict(by_file.most_common(top))}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {"name{labels}": value} (comments dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None under 3 points."""
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered))) - 1))]


def type_growth(before: dict[str, int], after: dict[str, int],
                top: int = 15) -> list[tuple[str, int, int]]:
    """(type, count after, growth) of the types whose object count grew most."""
    grown = [(name, count, count - before.get(name, 0)) for name, count in after.items()]
    return sorted((g for g in grown if g[2] > 0), key=lambda g: -g[2])[:top]


# --- the run's state -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients did and what went wrong."""

    opened: int = 0
    closed: int = 0
    reconnects: int = 0
    text_edits: int = 0
    map_sets: int = 0
    awareness_sets: int = 0
    sync_s: list[float] = field(default_factory=list)
    close_codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 10:
            self.error_examples.append(f"{kind}: {detail[:300]}")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Sample:
    t: float  # seconds since the churn started (negative before)
    phase: str  # start, churn, leaving, idle, trimmed
    server_kb: int
    redis_kb: int
    children_kb: int
    connections: float | None = None
    rooms: float | None = None
    allocated_blocks: int | None = None
    malloc_in_use_kb: int | None = None
    malloc_free_kb: int | None = None
    smaps_kb: dict[str, int] | None = None  # the server's RSS by kind (smaps_breakdown)


def summarize(samples: Sequence[Sample], tally: Tally, minutes: float) -> dict[str, Any]:
    """The numbers of the report, from the samples and the tally (pure)."""
    churn = [s for s in samples if s.phase == "churn"]
    half = minutes * 60 / 2
    out: dict[str, Any] = {}
    for key, label in (("server_kb", "server"), ("redis_kb", "redis"),
                       ("children_kb", "children")):
        def mb(sample: Sample | None, key: str = key) -> float | None:
            return None if sample is None else getattr(sample, key) / 1024

        first = samples[0] if samples else None
        last_churn = churn[-1] if churn else None
        idle = [s for s in samples if s.phase == "idle"]
        trimmed = [s for s in samples if s.phase == "trimmed"]
        out[label] = {
            "start_mb": mb(first),
            "peak_mb": max((getattr(s, key) for s in samples), default=0) / 1024,
            "end_under_load_mb": mb(last_churn),
            "after_idle_mb": mb(idle[-1] if idle else None),
            "after_trim_mb": mb(trimmed[-1] if trimmed else None),
            "slope_first_half_mb_per_min": slope_per_minute(
                [(s.t, getattr(s, key) / 1024) for s in churn if s.t < half]),
            "slope_second_half_mb_per_min": slope_per_minute(
                [(s.t, getattr(s, key) / 1024) for s in churn if s.t >= half]),
        }
    blocks = [(s.t, s.allocated_blocks / 1000) for s in churn
              if s.t >= half and s.allocated_blocks is not None]
    out["allocated_kblocks_slope_second_half_per_min"] = slope_per_minute(blocks)
    out["clients"] = {"opened": tally.opened, "closed": tally.closed,
                      "reconnects": tally.reconnects,
                      "sync_s_p50": percentile(tally.sync_s, 0.5),
                      "sync_s_p99": percentile(tally.sync_s, 0.99),
                      "sync_s_max": max(tally.sync_s, default=None)}
    out["updates"] = {"text_edits": tally.text_edits, "map_sets": tally.map_sets,
                      "awareness_sets": tally.awareness_sets,
                      "total": tally.text_edits + tally.map_sets + tally.awareness_sets}
    out["connections_max"] = max((s.connections or 0 for s in churn), default=None)
    last = samples[-1] if samples else None
    out["connections_at_end"] = None if last is None else last.connections
    out["rooms_at_end"] = None if last is None else last.rooms
    out["close_codes"] = dict(tally.close_codes)
    out["errors"] = dict(tally.errors)
    out["error_count"] = tally.error_count
    out["error_examples"] = tally.error_examples
    return out


def format_summary(summary: dict[str, Any], title: str) -> str:
    def num(value: Any, fmt: str = "8.1f") -> str:
        return f"{value:{fmt}}" if isinstance(value, int | float) else f"{'-':>8}"

    rows = [("RSS start (MB)", "start_mb"), ("RSS peak (MB)", "peak_mb"),
            ("RSS end under load (MB)", "end_under_load_mb"),
            ("RSS after idle (MB)", "after_idle_mb"),
            ("RSS after gc + malloc_trim (MB)", "after_trim_mb"),
            ("slope, 1st half (MB/min)", "slope_first_half_mb_per_min"),
            ("slope, 2nd half (MB/min)", "slope_second_half_mb_per_min")]
    lines = [title, f"{'':34}{'ysync':>8}{'redis':>8}{'pool':>8}"]
    for label, key in rows:
        if key == "after_trim_mb" and summary["server"][key] is None:
            continue
        fmt = "8.2f" if key.startswith("slope") else "8.1f"
        lines.append(f"{label:34}" + "".join(num(summary[p][key], fmt)
                                             for p in ("server", "redis", "children")))
    c, u = summary["clients"], summary["updates"]
    lines += [
        f"{'connections opened / closed':34}{c['opened']:>8}{c['closed']:>8}",
        f"{'reconnects (drop + connect again)':34}{c['reconnects']:>8}",
        f"{'sync time p50 / p99 / max (s)':34}{num(c['sync_s_p50'], '8.3f')}"
        f"{num(c['sync_s_p99'], '8.3f')}{num(c['sync_s_max'], '8.3f')}",
        f"{'updates: text / map / awareness':34}{u['text_edits']:>8}{u['map_sets']:>8}"
        f"{u['awareness_sets']:>8}",
        f"{'server connections max / at end':34}{num(summary['connections_max'], '8.0f')}"
        f"{num(summary['connections_at_end'], '8.0f')}",
        f"{'errors':34}{summary['error_count']:>8}  {summary['errors'] or ''}",
    ]
    return "\n".join(lines)


# --- sampling ------------------------------------------------------------------------------------


class Sampler:
    """Samples the server (VmRSS, its children, /metrics, the probe) every ``every`` seconds."""

    def __init__(self, server: ServerProcess, redis_url: str | None, probe: ServerProbe | None,
                 every: float) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid
        self.metrics_url = server.url.replace("ws://", "http://") + "/metrics"
        self.redis_url = redis_url  # external Redis: its RSS comes from INFO memory
        self.probe = probe
        self.every = every
        self.samples: list[Sample] = []
        self.probe_misses: list[str] = []
        self.phase = "start"
        self.t0 = time.monotonic()

    def children(self) -> tuple[list[int], list[int]]:
        """(redis-server pids, other pids) among the server's descendants."""
        redis_pids: list[int] = []
        others: list[int] = []
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    name = " ".join(child.cmdline()[:1]) or child.name()
                    (redis_pids if "redis-server" in name else others).append(child.pid)
        return redis_pids, others

    def _external_redis_kb(self) -> int:
        import redis

        client = redis.Redis.from_url(self.redis_url or "", socket_timeout=5,
                                      socket_connect_timeout=5)
        try:
            return int(client.info("memory")["used_memory_rss"]) // 1024
        except (redis.RedisError, KeyError, ValueError):
            return 0
        finally:
            client.close()

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                return parse_metrics(response.read().decode())
        except (OSError, urllib.error.URLError, ValueError):
            return {}

    async def sample(self) -> Sample:
        redis_pids, others = self.children()
        redis_kb = sum(map(read_rss_kb, redis_pids))
        if self.redis_url is not None:
            redis_kb = await asyncio.to_thread(self._external_redis_kb)
        metrics = await asyncio.to_thread(self.metrics)
        sample = Sample(time.monotonic() - self.t0, self.phase, read_rss_kb(self.pid),
                        redis_kb, sum(map(read_rss_kb, others)),
                        metrics.get("ysync_connections"), metrics.get("ysync_rooms"))
        smaps = read_smaps(self.pid)
        if smaps is not None:
            kinds = smaps_breakdown(smaps)
            sample.smaps_kb = {k: v for k, v in kinds.items() if isinstance(v, int)}
        if self.probe is not None:
            try:  # the probe may be busy with a checkpoint: the sample goes without it
                quick = await self.probe.ask("quick", within=5)
            except (TimeoutError, RuntimeError) as exc:
                self.probe_misses.append(f"t={sample.t:.0f}s: {exc}")
            else:
                sample.allocated_blocks = quick["allocated_blocks"]
                info = quick["mallinfo"]
                if info:
                    sample.malloc_in_use_kb = (info["uordblks"] + info["hblkhd"]) // 1024
                    sample.malloc_free_kb = info["fordblks"] // 1024
        self.samples.append(sample)
        return sample

    async def run(self, report_every: float, tally: Tally) -> None:
        last_report = -1e9
        while True:
            sample = await self.sample()
            if sample.t - last_report >= report_every:
                last_report = sample.t
                blocks = ("" if sample.allocated_blocks is None
                          else f" blocks={sample.allocated_blocks / 1000:.0f}k")
                print(f"  t={sample.t:6.0f}s {sample.phase:8} ysync={sample.server_kb / 1024:6.1f}"
                      f" MB redis={sample.redis_kb / 1024:5.1f} MB"
                      f" pool={sample.children_kb / 1024:5.1f} MB"
                      f" conns={sample.connections or 0:4.0f} rooms={sample.rooms or 0:3.0f}"
                      f"{blocks} opened={tally.opened} edits={tally.text_edits + tally.map_sets}"
                      f" errors={tally.error_count}", flush=True)
            await asyncio.sleep(self.every)


def storage_sizes(folder: Path) -> dict[str, int]:
    """Bytes of the snapshots stored under ``folder`` (filesystem storage): total and the
    largest room's, and how many files; documents that grow make every join larger."""
    rooms: Counter[str] = Counter()
    files = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                files += 1
                rooms[path.relative_to(folder).parts[0]] += path.stat().st_size
    return {"files": files, "bytes": sum(rooms.values()),
            "largest_room_bytes": max(rooms.values(), default=0)}


async def checkpoint(name: str, sampler: Sampler, probe: ServerProbe | None,
                     checkpoints: dict[str, Any], storage: Path) -> None:
    """A full look at the server: smaps by kind, the stored documents' size, and with the
    probe its object counts."""
    entry: dict[str, Any] = {"t": time.monotonic() - sampler.t0,
                             "rss_kb": read_rss_kb(sampler.pid),
                             "storage": await asyncio.to_thread(storage_sizes, storage)}
    smaps = read_smaps(sampler.pid)
    if smaps is not None:
        entry["smaps"] = smaps_breakdown(smaps)
    if probe is not None:
        try:
            bases = [b for b in ("start", "warm", "end_load") if b in checkpoints][-2:]
            entry["probe"] = await probe.ask("checkpoint", within=600, name=name,
                                            bases=bases)
        except (TimeoutError, RuntimeError) as exc:
            entry["probe_error"] = str(exc)
    checkpoints[name] = entry
    smaps = entry.get("smaps", {})
    extra = ""
    if "probe" in entry:
        p = entry["probe"]
        extra = (f" blocks={p['allocated_blocks'] / 1000:.0f}k objects="
                 f"{sum(p['types'].values()) / 1000:.0f}k "
                 f"malloc in use={(p['mallinfo'].get('uordblks', 0)) / MB:.1f} MB "
                 f"free={(p['mallinfo'].get('fordblks', 0)) / MB:.1f} MB")
    stored = entry["storage"]
    extra += (f" stored={stored['bytes'] / 1024:.0f} KiB (largest room "
              f"{stored['largest_room_bytes'] / 1024:.0f} KiB)")
    print(f"  checkpoint {name}: rss={entry['rss_kb'] / 1024:.1f} MB (heap "
          f"{smaps.get('heap', 0) / 1024:.1f}, thread arenas "
          f"{smaps.get('thread_arenas', 0) / 1024:.1f}, anon {smaps.get('anon', 0) / 1024:.1f}, "
          f"files {smaps.get('files', 0) / 1024:.1f}){extra}", flush=True)


# --- the churn -----------------------------------------------------------------------------------


class Churn:
    """``clients`` slots; each runs one client after another until :attr:`stop_at`."""

    def __init__(self, args: argparse.Namespace, clients: NodeClients, url: str,
                 tally: Tally) -> None:
        self.args = args
        self.clients = clients
        self.url = url
        self.tally = tally
        self.rng = random.Random(args.seed)
        self.ids = itertools.count()
        self.stop_at = time.monotonic() + args.minutes * 60
        self.letters = "abcdefghijklmnopqrstuvwxyz "

    @property
    def stopping(self) -> bool:
        limit: int = self.args.max_errors
        return time.monotonic() >= self.stop_at or self.tally.error_count >= limit

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.args.clients):
                tg.create_task(self._slot())

    async def _slot(self) -> None:
        # start staggered over the first lifetime, so that departures are spread from the start
        await asyncio.sleep(self.rng.uniform(0, min(self.args.min_life, 10)))
        while not self.stopping:
            name = f"c{next(self.ids)}"
            room = f"soak-{self.rng.randrange(self.args.rooms)}"
            opened: list[str] = []
            try:
                await self._life(name, room, opened)
            except (AssertionError, TimeoutError) as exc:
                self.tally.error("client", f"{name} in {room}: {exc}")
                await asyncio.sleep(1)  # do not spin on a failing server
            # not in a finally: once cancelled (Ctrl-C), NodeClients' exit destroys them all
            if opened:
                try:
                    await self.clients.call("close", name=name, wait=30)
                    self.tally.closed += 1
                except (AssertionError, TimeoutError) as exc:
                    self.tally.error("close", f"{name}: {exc}")

    async def _sync(self, name: str) -> None:
        started = time.monotonic()
        await self.clients.synced(name, within=self.args.sync_timeout)
        self.tally.sync_s.append(time.monotonic() - started)

    async def _life(self, name: str, room: str, opened: list[str]) -> None:
        rng = self.rng
        await self.clients.open(name, self.url, room,
                                awareness={"user": name, "color": rng.randrange(360)})
        opened.append(name)
        self.tally.opened += 1
        await self._sync(name)
        while True:
            lifetime = rng.uniform(self.args.min_life, self.args.max_life)
            await self._edit_for(name, min(time.monotonic() + lifetime, self.stop_at))
            if self.stopping or rng.random() >= self.args.reconnect_share:
                return
            await self.clients.call("disconnect", name=name)
            await asyncio.sleep(rng.uniform(0.2, 3.0))
            await self.clients.call("connect", name=name)
            await self._sync(name)
            self.tally.reconnects += 1

    async def _edit_for(self, name: str, until: float) -> None:
        rng = self.rng
        length = int(await self.clients.call("textLength", name=name))
        edits = 0
        while True:
            pause = rng.expovariate(1 / self.args.edit_every)
            if time.monotonic() + pause >= until or self.stopping:
                await asyncio.sleep(max(0.0, min(pause, until - time.monotonic())))
                return
            await asyncio.sleep(pause)
            edits += 1
            if edits % 8 == 0:  # other clients of the room edit the same text
                length = int(await self.clients.call("textLength", name=name))
            roll = rng.random()
            if roll < 0.7 and (roll < 0.5 or length < 50) and length < self.args.max_text:
                text = "".join(rng.choices(self.letters, k=rng.randint(1, 30)))
                await self.clients.call("insertText", name=name,
                                        index=rng.randint(0, length), text=text)
                length += len(text)
                self.tally.text_edits += 1
            elif roll < 0.7:
                size = rng.randint(1, min(60, length))
                await self.clients.call("deleteText", name=name,
                                        index=rng.randint(0, length - size), length=size)
                length -= size
                self.tally.text_edits += 1
            elif roll < 0.93:
                value: Any = (rng.randrange(1000) if rng.random() < 0.5
                              else {"by": name, "at": round(time.time(), 3)})
                await self.clients.call("mapSet", name=name, key=f"k{rng.randrange(32)}",
                                        value=value)
                self.tally.map_sets += 1
            else:
                await self.clients.call("awarenessSet", name=name, state={
                    "user": name, "cursor": rng.randint(0, max(0, length))})
                self.tally.awareness_sets += 1


def drain_events(clients: NodeClients, tally: Tally) -> None:
    """Count the clients' close events (the list would grow for the whole run otherwise)."""
    events, clients.events[:] = list(clients.events), []
    for event in events:
        if event.get("event") == "close":
            code = event.get("code")
            tally.close_codes[str(code)] += 1
            if code not in NORMAL_CLOSES:
                tally.error(f"closed {code}", f"{event.get('name')} closed with {code}")


# --- main ----------------------------------------------------------------------------------------


async def churn_phase(args: argparse.Namespace, clients: NodeClients, server: ServerProcess,
                      sampler: Sampler, take_checkpoint: Callable[[str], Awaitable[None]],
                      tally: Tally) -> None:
    """Run the churn for ``args.minutes`` with checkpoints on the way; every client has left
    when it returns (also when cancelled: the churn is cancelled with it)."""
    assert server.proc is not None
    churn_task = asyncio.create_task(Churn(args, clients, server.url, tally).run())
    try:
        duration = args.minutes * 60
        marks = {"warm": min(60.0, duration / 5), "mid": duration / 2,
                 "end_load": max(0.0, duration - 2 * args.sample_every)}
        for name, at in marks.items():
            while time.monotonic() - sampler.t0 < at and not churn_task.done():
                await asyncio.sleep(0.5)
                drain_events(clients, tally)
                if server.proc.returncode is not None:
                    raise RuntimeError(f"the server exited with {server.proc.returncode}")
            if not churn_task.done():
                await take_checkpoint(name)
        sampler.phase = "leaving"
        await asyncio.wait_for(asyncio.shield(churn_task), timeout=args.max_life + 120)
    finally:
        if not churn_task.done():
            churn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churn_task
        drain_events(clients, tally)


def server_env(args: argparse.Namespace, workdir: Path, probe_dir: Path | None,
               prefix: str) -> dict[str, str]:
    env = {"LOG": "warning", "PYTHONUNBUFFERED": "1", "YSYNC_DATA_DIR": str(workdir / "data"),
           "PORT": "", "POSTGRES": ""}
    if args.redis:
        env.update({"REDIS": args.redis, "REDIS_PREFIX": prefix,
                    "YSYNC_STORAGE_KIND": "filesystem",
                    "YSYNC_STORAGE_PATH": str(workdir / "storage"),
                    "YSYNC_WORKER_ENABLED": "yes"})
    else:
        env["REDIS"] = ""  # an empty value means unset: the embedded default
    if probe_dir is not None:
        (probe_dir / "sitecustomize.py").write_text(PROBE_SOURCE)
        env.update({"PYTHONPATH": os.pathsep.join(
                        [str(probe_dir), *filter(None, [os.environ.get("PYTHONPATH")])]),
                    "YSYNC_SOAK_PROBE_DIR": str(probe_dir),
                    "YSYNC_SOAK_PROBE_PARENT": str(os.getpid())})
        if args.tracemalloc:
            env["YSYNC_SOAK_TRACEMALLOC"] = str(args.tracemalloc)
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def codec_compiled() -> bool:
    """Whether the server's update codec is the mypyc build (it imports the same ysync)."""
    import ysync.updates

    return ysync.updates.COMPILED


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    node_dir = nodeenv.install()
    prefix = f"ysync-soak-{uuid.uuid4().hex[:8]}"
    probe_dir = workdir / "probe" if args.probe else None
    if probe_dir is not None:
        probe_dir.mkdir()
    probe = ServerProbe(probe_dir) if probe_dir is not None else None
    tally = Tally()
    checkpoints: dict[str, Any] = {}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                              "machine": machine_info(), "ysync_source": source_info(),
                              "args": vars(args), "load_average_start": os.getloadavg(),
                              "codec_compiled": codec_compiled()}
    server = ServerProcess(server_env(args, workdir, probe_dir, prefix))
    await server.start()
    assert server.proc is not None
    print(f"-- ysync on {server.url} (pid {server.proc.pid}, "
          f"{'Redis ' + args.redis if args.redis else 'embedded Redis'})", flush=True)
    sampler = Sampler(server, args.redis, probe, args.sample_every)
    storage = workdir / "storage" if args.redis else workdir / "data" / "storage"
    sampler_task: asyncio.Task[None] | None = None
    try:
        await asyncio.sleep(2)  # let the worker and the embedded Redis settle
        await checkpoint("start", sampler, probe, checkpoints, storage)
        await sampler.sample()
        async with NodeClients(node_dir) as clients:
            sampler.t0 = time.monotonic()
            sampler.phase = "churn"
            cpu0 = cpu_seconds([server.proc.pid, *itertools.chain(*sampler.children())])
            sampler_task = asyncio.create_task(sampler.run(args.report_every, tally))
            await churn_phase(args, clients, server, sampler,
                              lambda name: checkpoint(name, sampler, probe, checkpoints, storage),
                              tally)
        report["cpu_s_during_churn"] = cpu_seconds(
            [server.proc.pid, *itertools.chain(*sampler.children())]) - cpu0
        report["churn_s"] = time.monotonic() - sampler.t0
        sampler.phase = "idle"
        print(f"-- every client left; idle for {args.idle:g} s", flush=True)
        await asyncio.sleep(args.idle)
        await sampler.sample()
        await checkpoint("idle", sampler, probe, checkpoints, storage)
        if args.trim and probe is not None:
            report["trim"] = await probe.ask("trim")
            sampler.phase = "trimmed"
            await asyncio.sleep(1)
            await sampler.sample()
            await checkpoint("trimmed", sampler, probe, checkpoints, storage)
        report["metrics_end"] = await asyncio.to_thread(sampler.metrics)
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            try:
                await sampler_task
            except asyncio.CancelledError:
                pass
            except (OSError, psutil.Error, TimeoutError, RuntimeError) as exc:
                tally.error("sampler", f"sampling stopped: {exc!r}")
        await server.stop()
        if args.redis:
            with contextlib.suppress(Exception):
                delete_prefix(args.redis, prefix)
    report["load_average_end"] = os.getloadavg()
    report["summary"] = summarize(sampler.samples, tally, args.minutes)
    report["checkpoints"] = checkpoints
    report["probe_misses"] = sampler.probe_misses
    report["samples"] = [vars(s) for s in sampler.samples]
    report["server_log"] = [line for line in server.stderr_lines
                            if (" WARNING " in line or " ERROR " in line or "Error" in line)
                            and "authentication is OFF" not in line][:50]
    return report


def print_investigation(report: dict[str, Any]) -> None:
    """What the probe saw: object types that grew, pymalloc and glibc before and after."""
    points = report["checkpoints"]
    for label, a_name, b_name in (("start -> idle", "start", "idle"),
                                  ("warm -> idle", "warm", "idle")):
        a, b = points.get(a_name, {}).get("probe"), points.get(b_name, {}).get("probe")
        if a and b:
            print(f"-- object types that grew, {label}:")
            for name, count, grown in type_growth(a["types"], b["types"], 12):
                print(f"     {grown:+8d}  {count:8d}  {name}")
    for name, point in points.items():
        probe = point.get("probe")
        if probe:
            info = probe["mallinfo"]
            print(f"-- {name:8}: pymalloc {probe['pymalloc']} glibc in use "
                  f"{info.get('uordblks', 0) / MB:.1f} MB, free held "
                  f"{info.get('fordblks', 0) / MB:.1f} MB, mmapped "
                  f"{info.get('hblkhd', 0) / MB:.1f} MB")
            for base, diff in probe.get("tracemalloc", {}).get("since", {}).items():
                print(f"     traced memory that grew since {base} (by line):")
                for stat in diff["grew"][:10]:
                    print(f"     {stat['size_diff_kb']:+9.1f} KiB {stat['count_diff']:+7d}  "
                          f"{stat['where']}")
    trim = report.get("trim")
    if trim:
        print(f"-- gc.collect(): {trim['gc_collected']} objects; RSS "
              f"{trim['before']['rss_kb'] / 1024:.1f} -> {trim['after_gc']['rss_kb'] / 1024:.1f}"
              f" MB; malloc_trim(0) -> {trim['after_trim']['rss_kb'] / 1024:.1f} MB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/soak.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="churn time (10)")
    parser.add_argument("--clients", type=int, default=300, help="clients at any time (300)")
    parser.add_argument("--rooms", type=int, default=60, help="rooms they are spread over (60)")
    parser.add_argument("--min-life", type=float, default=5.0,
                        help="shortest client lifetime, seconds (5)")
    parser.add_argument("--max-life", type=float, default=60.0,
                        help="longest client lifetime, seconds (60)")
    parser.add_argument("--edit-every", type=float, default=2.0,
                        help="mean seconds between a client's edits (2)")
    parser.add_argument("--reconnect-share", type=float, default=0.2,
                        help="share of departures that drop and reconnect instead (0.2)")
    parser.add_argument("--max-text", type=int, default=3000,
                        help="a room's text stops growing here (edits delete instead) (3000)")
    parser.add_argument("--sync-timeout", type=float, default=30.0,
                        help="seconds a client may take to sync (30)")
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds to wait after every client left (60)")
    parser.add_argument("--sample-every", type=float, default=5.0,
                        help="seconds between RSS samples (5)")
    parser.add_argument("--report-every", type=float, default=30.0,
                        help="seconds between progress lines (30)")
    parser.add_argument("--max-errors", type=int, default=500,
                        help="stop the churn early after this many errors (500)")
    parser.add_argument("--seed", type=int, default=9, help="random seed (9)")
    parser.add_argument("--redis", metavar="URL",
                        help="an external Redis (a unique prefix, deleted afterwards; "
                             "filesystem storage in a temporary folder) instead of the embedded")
    parser.add_argument("--json", metavar="FILE", help="write the summary and every sample")
    probing = parser.add_argument_group("investigation")
    probing.add_argument("--probe", action="store_true",
                         help="a probe in the server: allocated blocks, glibc mallinfo2, object "
                              "counts by type and pymalloc arenas at checkpoints")
    probing.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                         help="trace allocations in the server (implies --probe; slows it)")
    probing.add_argument("--trim", action="store_true",
                         help="after the idle wait, gc.collect() + malloc_trim(0) in the server "
                              "and sample again (implies --probe)")
    probing.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                         help="extra environment of the server, e.g. MALLOC_ARENA_MAX=2 or "
                              "PYTHONMALLOC=malloc (repeatable)")
    args = parser.parse_args(argv)
    if args.tracemalloc or args.trim:
        args.probe = True
    if not 0 < args.min_life <= args.max_life:
        parser.error("--min-life must be positive and at most --max-life")
    if args.minutes <= 0 or args.clients <= 0 or args.rooms <= 0 or args.edit_every <= 0:
        parser.error("--minutes, --clients, --rooms and --edit-every must be positive")
    if not 0 <= args.reconnect_share <= 1:
        parser.error("--reconnect-share is a share between 0 and 1")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    return args


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM like Ctrl-C: cancel, so that every process started is stopped on the way out
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="ysync-soak-") as tmp:
        budget = args.minutes * 60 + args.idle + args.max_life + 300
        return await asyncio.wait_for(soak(args, Path(tmp)), timeout=budget)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not nodeenv.node_available():
        print("node and npm are needed (apt-get install nodejs npm)", file=sys.stderr)
        return 2
    if args.redis and not redis_answers(args.redis):
        print(f"no Redis answers at {args.redis}", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        report = asyncio.run(_main(args))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print("the run passed its deadline; every process started was stopped", file=sys.stderr)
        return 124
    except asyncio.CancelledError:  # SIGTERM
        print("terminated; every process started was stopped", file=sys.stderr)
        return 143
    title = (f"soak: {args.clients} clients over {args.rooms} rooms, {args.minutes:g} min of "
             f"churn, {args.idle:g} s idle ({'Redis ' + args.redis if args.redis else 'embedded'}"
             f"; ysync {report['ysync_source']}, codec "
             f"{'compiled' if report['codec_compiled'] else 'pure Python'}; load average "
             f"{report['load_average_start'][0]:.1f}"
             f" -> {report['load_average_end'][0]:.1f})")
    if args.probe:
        print_investigation(report)
    print("\n" + format_summary(report["summary"], title))
    if report["server_log"]:
        print(f"server logged {len(report['server_log'])} warnings/errors, e.g. "
              f"{report['server_log'][0][:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if report["summary"]["error_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
