"""The JavaScript y-redis 0.1.6 server and worker as test peers: where they are, how to run them.

Where (:func:`locate`): ``$YSYNC_YREDIS_PEER`` names an install folder (one holding
``bin/server.js``); otherwise ``<repo>/../shared/peers/y-redis-0.1.6/setup`` is run (idempotent,
installs into ``~/.cache/ysync-peers``, prints the folder on its last line). With neither,
:func:`locate` answers ``None`` and the tests using the peer are skipped; a setup that fails
raises :class:`PeerSetupError` (a test failure, with the script's output).

How (:class:`ChildProcess`, :func:`yredis_server`, :func:`yredis_worker`): every setting is an
environment variable, as for y-redis itself: ``REDIS``, ``REDIS_PREFIX``, ``POSTGRES``,
``AUTH_PUBLIC_KEY``, ``AUTH_PERM_CALLBACK`` and ``PORT`` for the server; ``REDIS_TASK_DEBOUNCE``
and ``REDIS_MIN_MESSAGE_LIFETIME`` (ms) for the worker. The server asks the permission endpoint
``GET <AUTH_PERM_CALLBACK>/<room>/<userid>`` (a URL joined onto the callback with a ``/``) and
reads ``yaccess`` (``"rw"`` writes) and ``yuserid`` of the JSON answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Self

from conftest import seconds

REPO = Path(__file__).resolve().parents[1]
VERSION = "0.1.6"
#: Names an install folder of the peer (one with bin/server.js); wins over the setup script.
ENV_VAR = "YSYNC_YREDIS_PEER"
SETUP = REPO.parent / "shared" / "peers" / f"y-redis-{VERSION}" / "setup"


class PeerSetupError(Exception):
    """The peer is configured (or its setup script exists) but cannot be used."""


def locate(setup: Path = SETUP, timeout: float = 900) -> Path | None:
    """The peer's install folder, ``None`` when there is none to be had (see the module doc)."""
    named = os.environ.get(ENV_VAR, "")
    if named:
        folder = Path(named).expanduser()
        if not (folder / "bin" / "server.js").is_file():
            raise PeerSetupError(f"${ENV_VAR}={named} holds no bin/server.js")
        return folder
    if not setup.is_file():
        return None
    cache = Path.home() / ".cache" / "ysync-peers"
    cache.mkdir(parents=True, exist_ok=True)
    # the script starts with rm -rf of its folder: one run at a time per machine
    with open(cache / f"y-redis-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            result = subprocess.run(["bash", str(setup)], capture_output=True, text=True,
                                    timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise PeerSetupError(f"{setup} did not finish within {timeout:.0f} s") from exc
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if result.returncode != 0:
        raise PeerSetupError(f"{setup} failed (exit {result.returncode}):\n{output}")
    lines = result.stdout.strip().splitlines()
    folder = Path(lines[-1]) if lines else Path()
    if not lines or not (folder / "bin" / "server.js").is_file():
        raise PeerSetupError(f"{setup} printed no install folder with bin/server.js:\n{output}")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ChildProcess:
    """A subprocess whose stdout and stderr lines are kept (the last ones) for messages.

    ``async with`` starts it; leaving sends SIGTERM, waits, and kills it if it lingers.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 cwd: Path | None = None) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = {**os.environ, **env}
        self._cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self._new_line = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            *self._argv, env=self._env, cwd=self._cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._tasks = [asyncio.create_task(self._read(self.proc.stdout, "out")),
                       asyncio.create_task(self._read(self.proc.stderr, "err"))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read(self, stream: asyncio.StreamReader, which: str) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(f"{which}: {line}")
            self._new_line.set()
            if os.environ.get("YSYNC_TEST_SHOW_SERVER_LOG"):
                print(f"[{self.name}] {line}", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait_for_line(self, text: str, within: float) -> None:
        """Wait (scaled ``within`` seconds) until a printed line contains ``text``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(within)
        while not any(text in line for line in self.lines):
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before "
                                     f"printing {text!r}:\n{self.log_text()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name} did not print {text!r} within "
                                     f"{seconds(within):.0f} s:\n{self.log_text()}")
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), min(remaining, 0.2))

    async def wait_for_port(self, port: int, within: float) -> None:
        """Wait (scaled ``within`` seconds) until 127.0.0.1:``port`` accepts connections."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(within)
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before "
                                     f"listening on {port}:\n{self.log_text()}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if loop.time() > deadline:
                    raise AssertionError(f"{self.name} did not listen on {port} within "
                                         f"{seconds(within):.0f} s:\n{self.log_text()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 (scaled) seconds; the exit status."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), seconds(10))
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, seconds(5))
        return self.proc.returncode

    def log_text(self) -> str:
        return "\n".join(self.lines)


class YRedisServer(ChildProcess):
    """``node bin/server.js`` on a free port; ``url`` is what a y-websocket provider takes."""

    def __init__(self, peer: Path, env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.port = free_port()
        super().__init__(f"y-redis server {self.port}", ["node", str(peer / "bin" / "server.js")],
                         {**env, "PORT": str(self.port)}, cwd)
        self.url = f"ws://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def yredis_server(peer: Path, env: Mapping[str, str],
                        cwd: Path | None = None) -> AsyncIterator[YRedisServer]:
    """A running y-redis server (its port accepts connections); stopped on leaving.

    (Its "Listening to port" line is printed empty when stdout is not a terminal: lib0 0.2.93's
    colourless logging drops styled strings.)
    """
    async with YRedisServer(peer, env, cwd) as server:
        await server.wait_for_port(server.port, 30)
        yield server


@contextlib.asynccontextmanager
async def yredis_worker(peer: Path, env: Mapping[str, str],
                        cwd: Path | None = None) -> AsyncIterator[ChildProcess]:
    """A running y-redis worker (``node bin/worker.js``); stopped on leaving.

    It prints only its storage line (``using postgres store``); that it claims tasks shows in
    Redis and in storage, not in its output (``LOG=*`` turns on lib0's debug log).
    """
    async with ChildProcess("y-redis worker", ["node", str(peer / "bin" / "worker.js")],
                            env, cwd) as worker:
        await worker.wait_for_line(" store", 30)
        yield worker
