"""ysync on a Redis behind Sentinel (``redis+sentinel://``): a master, a replica and three
Sentinels of the test's own (Debian's redis-server, in Sentinel mode for the Sentinels), real
ysync servers, the worker and real y-websocket clients; then failovers while clients write.

Sentinel's failover is asynchronous replication with a promotion: the promoted replica lacks
what the old master had not sent it, and until the Sentinels announce the switch
(``+switch-master``) connections to the old master keep working, so writes in between are
acknowledged and lost. ysync's answer (``ysync.sentinel_pool``): every connection moves to the
new master on the announcement, and every connected client is asked for its document again. The
tests check what that guarantees: after a graceful ``SENTINEL FAILOVER`` and after a SIGKILL of
the master, with writers writing through it, the clients converge and a fresh client (which
gets only what Redis holds) and the worker's snapshot have every item.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ysync.config import load_config
from ysync.redis_clients import redis_client
from ysync.storage.filesystem import FilesystemStorage
from ysync.streams import room_stream_key

from conftest import seconds
from harness import (
    REPO,
    NodeClients,
    ServerProcess,
    burst,
    converged,
    holds_all,
    items_of,
    running_server,
    wait_until,
)
from storage_fixtures import doc_json_of_v2, wait_past_ms
from test_redis_tls import Pki, make_pki, tls_env
from worker_process import TIMING, run_worker_once

pytestmark = [pytest.mark.anyio]

SERVICE = "ysync-main"
#: ms without an answer before a Sentinel takes the master for down (Sentinel's default: 30 s)
DOWN_AFTER_MS = 500
#: ms a failover may take before another is tried (Sentinel's default: 3 minutes)
FAILOVER_TIMEOUT_MS = 3000
MASTER_PASSWORD = "master-secret"
SENTINEL_PASSWORD = "sentinel-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server() -> str | None:
    """Debian's redis-server (``apt-get install redis-server``): it also runs as a Sentinel."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class SentinelRedis:
    """A master and its replica on 127.0.0.1, watched by three Sentinels (quorum 2); with
    ``pki``, every one of them is on a TLS port only and requires client certificates; with
    ``passwords``, the master and replica require :data:`MASTER_PASSWORD` and the Sentinels
    another one, :data:`SENTINEL_PASSWORD`."""

    binary: str
    folder: Path
    pki: Pki | None = None
    passwords: bool = False
    redis_ports: list[int] = field(default_factory=list)  # [first master, first replica]
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        scheme = "rediss" if self.pki else "redis"
        if self.passwords:
            return (f"{scheme}+sentinel://:{MASTER_PASSWORD}@{hosts}/{SERVICE}"
                    f"?sentinel_password={SENTINEL_PASSWORD}")
        return f"{scheme}+sentinel://{hosts}/{SERVICE}"

    def _listen(self, port: int) -> dict[str, str]:
        """How a node listens on ``port``: plain, or TLS only (and connects out over TLS, with
        its certificate as the client certificate)."""
        settings = {"port": str(port)}
        if self.pki is not None:
            settings = {"port": "0", "tls-port": str(port),
                        "tls-cert-file": str(self.pki.server_cert),
                        "tls-key-file": str(self.pki.server_key),
                        "tls-ca-cert-file": str(self.pki.ca), "tls-replication": "yes"}
        if self.passwords:
            own = MASTER_PASSWORD if port in self.redis_ports else SENTINEL_PASSWORD
            settings["requirepass"] = own
        return settings

    async def _spawn(self, port: int, *args: str) -> None:
        self.procs[port] = await asyncio.create_subprocess_exec(
            self.binary, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def start(self) -> None:
        master, replica = _free_port(), _free_port()
        self.redis_ports = [master, replica]
        for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
            folder = self.folder / f"redis-{port}"
            folder.mkdir(parents=True)
            listen = [arg for key, value in self._listen(port).items()
                      for arg in (f"--{key}", value)]
            if self.passwords:  # the replica's password to its master
                listen += ["--masterauth", MASTER_PASSWORD]
            await self._spawn(port, *listen, "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                              "--dir", str(folder),
                              "--logfile", str(folder / "redis.log"), *extra)
        # replicating before the Sentinels start: their first look at the master shows the
        # replica (the next is 10 s later)
        await wait_until(lambda: self._replicating(replica), 15, "the replica to replicate")
        for _ in range(3):
            port = _free_port()
            folder = self.folder / f"sentinel-{port}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"  # a Sentinel rewrites its file: one of its own
            conf.write_text(
                "".join(f"{key} {value}\n" for key, value in self._listen(port).items())
                + f"bind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                + (f"sentinel auth-pass {SERVICE} {MASTER_PASSWORD}\n"
                   f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n" if self.passwords else ""))
            self.sentinel_ports.append(port)
            await self._spawn(port, str(conf), "--sentinel")
        await wait_until(self._ready, 30, "the Sentinels to see the master, its replica and "
                         "each other")

    async def ask_master(self, *command: str) -> object:
        return await self._ask(self.redis_ports[0], *command)

    async def _ask(self, port: int, *command: str) -> object:
        pki = self.pki
        tls = {} if pki is None else {"ssl": True, "ssl_ca_certs": str(pki.ca),
                                      "ssl_certfile": str(pki.client_cert),
                                      "ssl_keyfile": str(pki.client_key)}
        password = None
        if self.passwords:
            password = MASTER_PASSWORD if port in self.redis_ports else SENTINEL_PASSWORD
        client = aioredis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1,
                                decode_responses=True, password=password, **tls)
        try:
            return await client.execute_command(*command)
        finally:
            await client.aclose()

    async def _replicating(self, port: int) -> bool:
        try:
            info = await self._ask(port, "INFO", "replication")
        except (aioredis.RedisError, OSError):
            return False
        return isinstance(info, dict) and info.get("master_link_status") == "up"

    async def _ready(self) -> bool:
        try:
            for port in self.sentinel_ports:
                state = await self._ask(port, "SENTINEL", "MASTER", SERVICE)
                assert isinstance(state, dict)
                if (state["flags"] != "master" or int(state["num-slaves"]) < 1
                        or int(state["num-other-sentinels"]) < 2):
                    return False
                replicas = await self._ask(port, "SENTINEL", "REPLICAS", SERVICE)
                assert isinstance(replicas, list)
                if not any(r["flags"] == "slave" and r["master-link-status"] == "ok"
                           for r in replicas):
                    return False
            return True
        except (aioredis.RedisError, OSError):
            return False

    async def master_port(self) -> int | None:
        """The master's port if every Sentinel names the same one, else None."""
        named = set()
        for port in self.sentinel_ports:
            try:
                address = await self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except (aioredis.RedisError, OSError):
                return None
            assert isinstance(address, list)
            named.add(int(address[1]))
        return named.pop() if len(named) == 1 else None

    async def wait_for_master(self, port: int, what: str) -> None:
        async def named() -> bool:
            return await self.master_port() == port

        await wait_until(named, 30, what)

    async def failover(self) -> int:
        """``SENTINEL FAILOVER``; returns the new master's port once every Sentinel names it."""
        old = await self.master_port()
        assert old is not None
        await self._ask(self.sentinel_ports[0], "SENTINEL", "FAILOVER", SERVICE)
        new = next(port for port in self.redis_ports if port != old)
        await self.wait_for_master(new, f"the Sentinels to promote the replica on port {new}")
        return new

    async def kill_master(self) -> int:
        """SIGKILL the master; returns the port of the replica the Sentinels then promote."""
        old = await self.master_port()
        assert old is not None
        self.procs[old].send_signal(signal.SIGKILL)
        await self.procs[old].wait()
        new = next(port for port in self.redis_ports if port != old)
        await self.wait_for_master(new, f"the Sentinels to promote the replica on port {new} "
                                        "after the master was killed")
        return new

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), seconds(10))
            except TimeoutError:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def _running(folder: Path, pki: Pki | None = None,
                   passwords: bool = False) -> AsyncIterator[SentinelRedis]:
    binary = _redis_server()
    if binary is None:
        pytest.skip("no Debian redis-server to run a master, a replica and Sentinels "
                    "(apt-get install redis-server)")
    setup = SentinelRedis(binary, folder, pki, passwords)
    try:
        try:
            await setup.start()
        except AssertionError:
            if pki is not None and any(p.returncode is not None for p in setup.procs.values()):
                pytest.skip(f"{binary} exits with TLS settings (built without TLS?); its logs "
                            f"are in {folder}")
            raise
        yield setup
    finally:
        await setup.stop()


@pytest.fixture
async def sentinel_redis(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    async with _running(tmp_path / "redis") as setup:
        yield setup


@pytest.fixture
async def sentinel_redis_with_passwords(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    async with _running(tmp_path / "redis", passwords=True) as setup:
        yield setup


@pytest.fixture
async def tls_sentinel_redis(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    """Every node on a TLS port only, requiring client certificates (mutual TLS)."""
    async with _running(tmp_path / "redis", make_pki(tmp_path / "pki")) as setup:
        yield setup


def ysync_env(setup: SentinelRedis, store: Path, prefix: str) -> dict[str, str]:
    return {"REDIS": setup.url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
            "YSYNC_STORAGE_PATH": str(store), "YSYNC_REDIS_TIMEOUT": "2", "LOG": "info",
            "PYTHONPATH": str(REPO), **TIMING, **(tls_env(setup.pki) if setup.pki else {})}


def _client(env: dict[str, str]) -> aioredis.Redis:
    return redis_client(env["REDIS"], load_config(os.devnull, environ=env))


async def compact_and_check(env: dict[str, str], cwd: Path, room: str,
                            expected: dict[str, object]) -> None:
    """Run ``ysync-worker --once`` past the debounce: the snapshot holds ``expected``."""
    client = _client(env)
    try:
        last = (await client.xrange(room_stream_key(env["REDIS_PREFIX"], room)))[-1][0]
        await wait_past_ms(client, int(last.decode().split("-")[0]) + 200)  # past the debounce
    finally:
        await client.aclose()
    code, log = await run_worker_once(env, cwd)
    assert code == 0, log
    stored = await FilesystemStorage(Path(env["YSYNC_STORAGE_PATH"])).retrieve_doc(room, "index")
    assert stored is not None, log
    assert doc_json_of_v2(stored.update_v2) == expected, log


def _switched(server: ServerProcess) -> bool:
    return any("the Sentinels moved the Redis master" in line for line in server.stderr_lines)


@pytest.mark.node
async def test_sync_and_compaction_through_sentinel(
    sentinel_redis: SentinelRedis, clients: NodeClients, tmp_path: Path
) -> None:
    await _sync_and_compact(sentinel_redis, clients, tmp_path)


@pytest.mark.node
async def test_sync_and_compaction_through_sentinel_over_mutual_tls(
    tls_sentinel_redis: SentinelRedis, clients: NodeClients, tmp_path: Path
) -> None:
    # the Sentinels and the master listen on TLS ports only: a plain connection gets nowhere
    await _sync_and_compact(tls_sentinel_redis, clients, tmp_path)


@pytest.mark.node
async def test_sync_through_sentinels_with_a_password_of_their_own(
    sentinel_redis_with_passwords: SentinelRedis, clients: NodeClients, tmp_path: Path
) -> None:
    # the master's password from the URL's userinfo, the Sentinels' from ?sentinel_password=
    await _sync_and_compact(sentinel_redis_with_passwords, clients, tmp_path)


async def _sync_and_compact(setup: SentinelRedis, clients: NodeClients, tmp_path: Path) -> None:
    """Two servers sync two clients, the worker compacts, a third server loads the result."""
    env = ysync_env(setup, tmp_path / "storage", f"ysent-{uuid.uuid4().hex[:8]}")
    room = "behind-sentinel"
    async with running_server(env) as a, running_server(env) as b:
        await clients.open("alice", a.url, room)
        await clients.open("bob", b.url, room)
        await clients.synced("alice")
        await clients.synced("bob")
        await clients.call("insertText", name="alice", text="sentinel ")
        await clients.call("mapSet", name="bob", key="k", value=[1, 2])

        async def both() -> bool:
            states = [await clients.get(name) for name in ("alice", "bob")]
            return all(sorted(s["text"]) == sorted("sentinel ") and s["map"] == {"k": [1, 2]}
                       for s in states)

        await wait_until(both, 15, "alice and bob to converge through redis+sentinel://")
        expected = await clients.get("alice")

    # the stream is on the master the Sentinels name
    assert await setup.master_port() == setup.redis_ports[0]
    assert int(str(await setup.ask_master("XLEN", room_stream_key(env["REDIS_PREFIX"],
                                                                   room)))) > 0
    await compact_and_check(env, tmp_path, room, {"map": expected["map"],
                                                  "text": expected["text"]})

    async with running_server(env) as c:  # loads the snapshot (and what remains in Redis)
        await clients.open("carol", c.url, room)
        await clients.synced("carol")
        state = await clients.get("carol")
        assert state["text"] == expected["text"] and state["map"] == expected["map"]


async def _write_through(setup: SentinelRedis, clients: NodeClients, tmp_path: Path,
                         fail: str, count: int, pace_ms: int) -> dict[str, list[int | None]]:
    """Writers on two servers write ``count`` items each while the master fails (``fail``:
    ``failover`` or ``kill``); every item then reaches everyone, Redis and storage. Returns
    the close codes each writer saw before the servers stopped."""
    env = ysync_env(setup, tmp_path / "storage", f"ysent-{uuid.uuid4().hex[:8]}")
    room = f"through-{fail}"
    names = ["alice", "bob"]
    items = items_of(names, fail, count)
    async with running_server(env) as a, running_server(env) as b:
        for name, server in zip(names, (a, b), strict=True):
            await clients.open(name, server.url, room)
        for name in names:
            await clients.synced(name)
        bursts = [asyncio.create_task(burst(clients, name, fail, count, pace_ms))
                  for name in names]
        try:
            async def flowing() -> bool:  # bob's first items reached alice through Redis
                return f"bob.{fail}.5" in (await clients.get("alice"))["map"]

            await wait_until(flowing, 15, "the first items to flow before the failure")
            if fail == "failover":
                await setup.failover()
            else:
                await setup.kill_master()
            await asyncio.gather(*bursts)
        finally:
            for task in bursts:
                task.cancel()
        await wait_until(lambda: converged(clients, names, items), 45,
                         f"alice and bob to hold all {len(items)} items after the {fail}")
        for server in (a, b):
            await wait_until(lambda s=server: _true(_switched(s)), 15,
                             f"server {server.port} to follow the new master")
        # a fresh client gets only what Redis holds: every item is there
        await clients.open("carol", a.url, room)
        await clients.synced("carol")
        await wait_until(lambda: _holds(clients, "carol", items), 10,
                         "a fresh client to get every item from Redis")
        expected = await clients.get("alice")
        closes = {name: clients.closes(name) for name in names}
        for server in (a, b):
            assert any("send their documents again" in line for line in server.stderr_lines)
    await compact_and_check(env, tmp_path, room, expected)
    return closes


async def _holds(clients: NodeClients, name: str, items: list[str]) -> bool:
    return holds_all(await clients.get(name), items)


async def _true(value: bool) -> bool:
    return value


@pytest.mark.node
@pytest.mark.slow
async def test_graceful_failover_while_clients_write(
    sentinel_redis: SentinelRedis, clients: NodeClients, tmp_path: Path
) -> None:
    closes = await _write_through(sentinel_redis, clients, tmp_path, "failover", 60, 50)
    # the switch is announced while the old master still works: nobody was disconnected, and
    # the bursts' updates the old master took after the promotion came back by the resync
    assert closes == {"alice": [], "bob": []}


@pytest.mark.node
@pytest.mark.slow
async def test_master_killed_while_clients_write(
    sentinel_redis: SentinelRedis, clients: NodeClients, tmp_path: Path
) -> None:
    # appends fail until the replica is promoted (about a second): the writers are closed
    # (1011), reconnect and send what the new master lacks, the others are asked for it
    await _write_through(sentinel_redis, clients, tmp_path, "kill", 100, 50)


async def test_no_reachable_sentinel_is_said_briefly() -> None:
    ports = [_free_port(), _free_port()]  # nothing listens there
    url = f"redis+sentinel://:pw@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{SERVICE}"
    client = _client({"REDIS": url, "YSYNC_REDIS_TIMEOUT": "1"})
    try:
        with pytest.raises(aioredis.ConnectionError) as caught:  # redis-py's MasterNotFoundError
            await client.connection_pool.sentinel_manager.discover_master(SERVICE)
    finally:
        await client.aclose()
    message = str(caught.value)
    assert message.startswith(f"no Sentinel names a master for '{SERVICE}' (127.0.0.1:{ports[0]}: "
                              f"Error 111 connecting"), message
    assert f"; 127.0.0.1:{ports[1]}: Error 111 connecting" in message, message
    assert len(message) < 300 and "pw" not in message, message
