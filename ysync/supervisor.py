"""``ysync serve --processes N``: N server processes on one port, for the cores of one machine.

One Python process runs one event loop on one core. With ``server.processes`` above 1 (0: one
per core), ``ysync serve`` becomes a supervisor: it starts the embedded Redis if no Redis is
configured (one, shared by every child), binds the port once to reserve it, and starts N
children, ``ysync serve`` each, binding that port with ``SO_REUSEPORT`` so that the kernel
spreads new connections over them. Every child is a complete server (its own stream reader,
appender and document loader) with the same settings, but only the first runs the in-process
worker. Children die with the supervisor (``PR_SET_PDEATHSIG``).

The supervisor prints its ready line once every child has printed its own. A child that exits
on its own is started again (after :data:`RESTART_DELAY` seconds, doubling while it keeps
failing). SIGTERM or SIGINT is passed to every child, which drains (docs/deploy.md); a second
signal is passed on too, and children still running after ``server.shutdown_timeout`` more
seconds are killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio

from ysync.config import Config, redact_url
from ysync.embedded import EmbeddedRedis, die_with_parent
from ysync.errors import YsyncError

log = logging.getLogger(__name__)

#: Seconds before a child that exited is started again (doubling up to :data:`RESTART_MAX`).
RESTART_DELAY = 1.0
RESTART_MAX = 30.0
#: A child that ran this long before exiting is restarted at once (it did not fail at start).
HEALTHY_RUN = 60.0
#: Seconds a child has to print its ready line.
START_TIMEOUT = 60.0
READY = "ysync ready on "


class SupervisorError(YsyncError):
    """A child server did not start."""


def process_count(config: Config) -> int:
    """``server.processes``, 0 resolved to the number of cores this process may run on."""
    if config.server.processes:
        return config.server.processes
    return len(os.sched_getaffinity(0)) or 1


def child_settings(config: Config, redis_url: str, port: int, index: int) -> list[str]:
    """The flags after a child's own ``serve`` arguments: they override what it would read."""
    flags = ["--server-processes", "1", "--server-reuse-port", "yes",
             "--server-port", str(port), "--server-demo", "yes" if config.serve_demo else "no",
             "--worker-enabled", "yes" if config.run_worker and index == 0 else "no",
             # the document API shares its port the same way (auto would turn it off in a
             # child, which sees a Redis URL)
             "--api-enabled", "yes" if config.api_enabled else "no"]
    if config.embedded_redis:
        # the children share the supervisor's embedded Redis, and so its storage: name them,
        # since a child with a Redis URL would otherwise require a storage setting
        flags += ["--redis-url", redis_url, "--storage-kind", config.storage_kind]
        if config.storage_kind == "filesystem":
            flags += ["--storage-path", str(config.storage_path.resolve())]
    return flags


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT: it keeps a port chosen
    by the kernel (``port`` 0) while the children bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SupervisorError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


@dataclass
class Child:
    """One child server and what the supervisor knows of it."""

    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restart_delay: float = RESTART_DELAY
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: set once the child has exited for good (after the stop)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            # its own session: a terminal's Ctrl-C reaches the supervisor only, which passes
            # one SIGTERM on (two signals would skip the drain)
            preexec_fn=die_with_parent, start_new_session=True)
        self.started_at = anyio.current_time()

    async def read_stdout(self) -> None:
        """Set :attr:`ready` on the child's ready line; pass its other lines on."""
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith(READY):
                self.ready.set()
            else:
                print(line, flush=True)


async def supervise(config: Config, serve_args: Sequence[str], config_path: str | None) -> None:
    """Run :func:`process_count` children until a signal (module docstring)."""
    count = process_count(config)
    host, port = config.server.host, config.server.port
    stop = anyio.Event()
    async with AsyncExitStack() as stack:
        redis_url = config.redis.url
        if not redis_url:
            redis_url = await stack.enter_async_context(EmbeddedRedis(config.embedded))
        reserved = reserve_port(host, port)
        stack.callback(reserved.close)
        port = int(reserved.getsockname()[1])
        head = [sys.executable, "-m", "ysync", *(["--config", config_path] if config_path else []),
                "serve", *serve_args]
        children = [Child(i, [*head, *child_settings(config, redis_url, port, i)])
                    for i in range(count)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, stop, children, config, tg.cancel_scope)
            for child in children:
                tg.start_soon(_keep_running, child, stop)
            try:
                with anyio.fail_after(START_TIMEOUT):
                    for child in children:
                        await child.ready.wait()
            except TimeoutError:
                raise SupervisorError(f"a server process did not start within "
                                      f"{START_TIMEOUT:.0f} s (its log is above)") from None
            log.info("%d server processes on port %d (redis %s)", count, port,
                     redact_url(redis_url))
            print(f"{READY}ws://{host}:{port} ({count} processes)", flush=True)
            await stop.wait()
            for child in children:  # each drains; _watch_signals kills them after a 2nd signal
                await child.done.wait()
            tg.cancel_scope.cancel()


async def _keep_running(child: Child, stop: anyio.Event) -> None:
    """Start ``child``; start it again whenever it exits before ``stop``."""
    try:
        await _run_until_stopped(child, stop)
    finally:
        child.done.set()


async def _run_until_stopped(child: Child, stop: anyio.Event) -> None:
    while True:
        await child.start()
        assert child.proc is not None
        reader = asyncio.ensure_future(child.read_stdout())
        code = await child.proc.wait()
        await reader
        if stop.is_set():
            return
        ran = anyio.current_time() - child.started_at
        if ran >= HEALTHY_RUN:
            child.restart_delay = RESTART_DELAY
        log.error("server process %d (pid %d) exited with status %d after %.0f s; starting it "
                  "again in %.0f s", child.index, child.proc.pid, code, ran, child.restart_delay)
        with anyio.move_on_after(child.restart_delay):
            await stop.wait()
        if stop.is_set():
            return
        child.restart_delay = min(RESTART_MAX, child.restart_delay * 2)


async def _watch_signals(stop: anyio.Event, children: Sequence[Child], config: Config,
                         scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            again = stop.is_set()
            log.info("received %s%s: passing it to %d server process(es)", name,
                     " again" if again else "", len(children))
            stop.set()
            for child in children:
                if child.proc is not None and child.proc.returncode is None:
                    child.proc.send_signal(signal.SIGTERM)
            if again:
                break
    # the second signal: children stop at once; any still running later are killed
    await anyio.sleep(config.server.shutdown_timeout)
    for child in children:
        if child.proc is not None and child.proc.returncode is None:
            log.warning("server process %d (pid %d) still running; killing it", child.index,
                        child.proc.pid)
            child.proc.kill()
    scope.cancel()
