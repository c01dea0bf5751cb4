"""Sampling a server process: CPU (utime+stime) over a window, RSS, py-spy stacks."""

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
from bench_servers import redis_cpu_seconds, stop_process


class Probe:
    """Samples one server process: RSS every 50 ms (peak kept) and CPU on demand."""

    def __init__(self, pid: int, redis_url: str | None) -> None:
        self.process = psutil.Process(pid)
        self.redis_url = redis_url
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
        return int(self.process.memory_info().rss)

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    def snapshot(self) -> dict[str, float | None]:
        """CPU seconds of the server (utime+stime), of Redis and of the machine, now."""
        times = self.process.cpu_times()
        machine = psutil.cpu_times()
        return {"t": time.monotonic(), "cpu": times.user + times.system,
                "redis": redis_cpu_seconds(self.redis_url) if self.redis_url else None,
                "machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}



def window(start: dict[str, float | None], end: dict[str, float | None]) -> dict[str, Any]:
    """CPU % of one core over a measured window."""
    seconds = float(end["t"] or 0) - float(start["t"] or 0)
    out: dict[str, Any] = {"window_s": seconds}
    for key, name in (("cpu", "server_cpu_pct"), ("redis", "redis_cpu_pct"),
                      ("machine", "machine_cpu_pct")):
        if start[key] is not None and end[key] is not None and seconds > 0:
            out[name] = 100 * (float(end[key] or 0) - float(start[key] or 0)) / seconds
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
