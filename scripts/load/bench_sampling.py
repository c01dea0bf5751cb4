"""Sampling a run: per-process CPU (utime+stime from /proc/<pid>/stat) over a window, the
server's RSS, py-spy stacks."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from bench_servers import redis_cpu_seconds, redis_local_pid, stop_process

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its children it waited for, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read()
    # the command name (field 2) is in parentheses and may hold spaces: count after its end
    fields = text[text.rindex(b")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (``ysync serve --server-processes``,
    the document assembly process); a descendant that ended counts in its parent's cutime."""
    total = process_cpu_seconds(pid)
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(child.pid)
    return total


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants, in bytes."""
    root = psutil.Process(pid)
    total = int(root.memory_info().rss)
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += int(child.memory_info().rss)
    return total


class RedisCpu:
    """CPU seconds of the Redis server: /proc/<pid>/stat when it runs on this machine (its pid
    from ``INFO server``), else what ``INFO cpu`` says."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pid = redis_local_pid(url)

    @property
    def source(self) -> str:
        return f"/proc/{self.pid}/stat" if self.pid else "INFO cpu"

    def seconds(self) -> float | None:
        if self.pid:
            with contextlib.suppress(OSError):
                return process_cpu_seconds(self.pid)
        return redis_cpu_seconds(self.url)


#: the processes sampled besides the server: name -> pid (None: not in this run)
Helpers = dict[str, int | None]


class Probe:
    """Samples one run: the server's RSS every 50 ms (peak kept), and on demand the CPU seconds
    of the server, its worker, Redis, the permission endpoint and the whole machine."""

    def __init__(self, pid: int, helpers: Helpers, redis: RedisCpu | None) -> None:
        self.pid = pid
        self.helpers = helpers
        self.redis = redis
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Probe:
        self.peak_rss = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self.rss())

    def rss(self) -> int:
        return tree_rss(self.pid)

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    def snapshot(self) -> dict[str, float | None]:
        """CPU seconds so far of every sampled process (None: not running), and the time."""
        machine = psutil.cpu_times()
        out: dict[str, float | None] = {
            "t": time.monotonic(), "cpu": tree_cpu_seconds(self.pid),
            "redis": self.redis.seconds() if self.redis else None,
            "machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}
        for name, pid in self.helpers.items():
            out[name] = None
            if pid is not None:
                with contextlib.suppress(OSError):
                    out[name] = tree_cpu_seconds(pid)
        return out


#: CPU figures of a window: snapshot key -> result key prefix
CPU_KEYS = (("cpu", "server"), ("worker", "worker"), ("redis", "redis"), ("perm", "perm"),
            ("machine", "machine"))


def window(start: dict[str, float | None], end: dict[str, float | None]) -> dict[str, Any]:
    """CPU % of one core over a measured window, per process (``server_cpu_pct``, ...)."""
    seconds = float(end["t"] or 0) - float(start["t"] or 0)
    out: dict[str, Any] = {"window_s": seconds}
    for key, name in CPU_KEYS:
        if start.get(key) is not None and end.get(key) is not None and seconds > 0:
            out[f"{name}_cpu_pct"] = 100 * (float(end[key] or 0) - float(start[key] or 0)) / seconds
    stack = [out.get(f"{n}_cpu_pct") for n in ("server", "worker", "redis")]
    if stack[0] is not None:
        out["stack_cpu_pct"] = sum(v or 0 for v in stack)
    return out


def cpu_seconds(start: dict[str, float | None], end: dict[str, float | None]) -> dict[str, Any]:
    """CPU seconds per process between two snapshots (``server_cpu_s``, ...)."""
    out: dict[str, Any] = {}
    for key, name in CPU_KEYS[:-1]:
        if start.get(key) is not None and end.get(key) is not None:
            out[f"{name}_cpu_s"] = float(end[key] or 0) - float(start[key] or 0)
    return out


def wait_quiet(max_wait: float, limit: float = 50.0) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``limit`` % of a core.

    This machine is shared: another job's CPU use shows up as our latency.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1)
        if busy < limit or time.monotonic() >= deadline:
            return busy
        time.sleep(1.0)



class PySpy:
    """Samples the server with py-spy (``$PY_SPY`` or on PATH) into collapsed stacks."""

    def __init__(self, pid: int, out: Path) -> None:
        binary = os.environ.get("PY_SPY") or shutil.which("py-spy")
        if binary is None:
            raise RuntimeError("--py-spy needs py-spy on PATH or in $PY_SPY")
        self.command = [binary, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                        "--nonblocking", "-o", str(out)]
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # attaching takes a moment; the window is seconds long

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            if self.out.exists():
                print(summarize_stacks(self.out), flush=True)



def summarize_stacks(path: Path, top: int = 15) -> str:
    """The functions most often on CPU (self) and ysync's on the stack (inclusive)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if frame.split(" ")[-1].startswith(("ysync/", "workers/")):
                inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"   py-spy {path.name}: {total} samples on CPU; % of them"]
    for title, table_ in (("self", own), ("in ysync", inclusive)):
        ranked = sorted(table_.items(), key=lambda kv: -kv[1])[:top]
        lines += [f"   {title:8} {100 * n / max(1, total):5.1f}%  {frame}" for frame, n in ranked]
    return "\n".join(lines)



def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func pkg/file.py``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    return f"{name} {'/'.join(parts[-2:])}"



def machine_info() -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return {"cpus": os.cpu_count(), "memory_gb": psutil.virtual_memory().total / 1e9,
            "python": platform.python_version(), "node": node.stdout.strip(),
            "platform": platform.platform()}
