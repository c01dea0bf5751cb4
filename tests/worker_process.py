"""``ysync-worker`` as a subprocess, for the tests that run it: once (``--once``) or
continuous (:class:`WorkerProcess`), optionally with a fault point (workers.compactor)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from workers.compactor import FAULT_ENV

from conftest import seconds
from harness import REPO

#: ms a task waits before a worker claims it: small, so that the tests wait little
DEBOUNCE_MS = 100
#: the part of the environment that every process of a test shares
TIMING = {"REDIS_TASK_DEBOUNCE": str(DEBOUNCE_MS), "REDIS_MIN_MESSAGE_LIFETIME": "0",
          "YSYNC_WORKER_IDLE_WAIT": "0.05", "YSYNC_WORKER_ENABLED": "no"}


def _worker_env(env: Mapping[str, str], fault: str | None) -> dict[str, str]:
    out = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    out.pop(FAULT_ENV, None)
    if fault is not None:
        out[FAULT_ENV] = fault
    return out


async def run_worker_once(env: Mapping[str, str], cwd: Path,
                          fault: str | None = None) -> tuple[int, str]:
    """``ysync-worker --once``; its exit status (-9: killed by SIGKILL) and its log."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "--once", env=_worker_env(env, fault), cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), seconds(60))
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


class WorkerProcess:
    """A continuous ``ysync-worker``; its log lines are collected as they come."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self._env = _worker_env(env, None)
        self._cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.cli", env=self._env, cwd=self._cwd,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def stop(self) -> int:
        """SIGTERM; the exit status."""
        assert self.proc is not None and self._reader is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), seconds(30))
        await asyncio.wait_for(self._reader, seconds(5))
        return code
