"""A kick that a process cannot receive: real ysync servers, real y-websocket clients.

The server reaches Redis through a TCP proxy that the test cuts (every proxied connection is
aborted, new ones are refused) and restores; ``ysync kick`` runs against the real Redis while
the server is cut off, so the pub/sub message never reaches it. The revocation record must: the
kicked client is closed with 4403 once the server is back, the others stay. Also: a kick that
arrives while a connection's permission is being checked still ends that connection.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from ysync.auth import generate_keypair, load_private_key, mint_token
from ysync.control import control_channel, record_member, revocations_key

from conftest import seconds
from harness import (
    NodeClients,
    PermissionEndpoint,
    ServerProcess,
    running_server,
    serving_http,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.node]


class CuttableProxy:
    """A TCP proxy on loopback to one Redis. :meth:`cut` aborts every proxied connection and
    refuses new ones until :meth:`restore`; Redis itself keeps running and keeps its data."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._db = parts.path or "/0"
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()
        self.is_cut = False
        self.url = ""

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}{self._db}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for transport in list(self._transports):
            transport.abort()  # a reset, as when a network path breaks
        self._transports.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass  # one side broke (or was cut): end both
        finally:
            self._transports.discard(sink.transport)
            sink.transport.abort()


class Permissions(PermissionEndpoint):
    """Read-write for everybody; users in ``held`` get their answer only once ``release`` is
    set."""

    held: set[str] = set()
    release = threading.Event()
    asked: list[str] = []

    def access(self, room: str, user: str) -> str | None:
        self.asked.append(user)
        if user in self.held:
            self.release.wait(timeout=30)
        return "rw"


@pytest.fixture
def perm_url() -> Iterator[str]:
    Permissions.held, Permissions.asked = set(), []
    Permissions.release = threading.Event()
    try:
        with serving_http(Permissions) as base:
            yield base + "/perm"
    finally:
        Permissions.release.set()


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_keypair()


def server_env(redis_url: str, prefix: str, perm_url: str, keys: tuple[str, str]
               ) -> dict[str, str]:
    return {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
            "YSYNC_WORKER_ENABLED": "no", "AUTH_PUBLIC_KEY": keys[0],
            "AUTH_PERM_CALLBACK": perm_url, "YSYNC_REDIS_TIMEOUT": "2", "LOG": "info"}


def token(keys: tuple[str, str], user: str) -> dict[str, str]:
    return {"yauth": mint_token(load_private_key(keys[1]), user, 600)}


async def kick(redis_url: str, prefix: str, room: str, user: str) -> str:
    """``ysync kick`` as an operator runs it, against the real Redis; its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ysync", "kick", room, "--user", user, "--redis", redis_url,
        "--prefix", prefix, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), seconds(30))
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def subscribers(redis_url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        counts = await client.pubsub_numsub(control_channel(prefix))
    finally:
        await client.aclose()
    return int(counts[0][1])


async def test_kick_reaches_a_server_cut_off_from_redis(
    redis_url: str, prefix: str, perm_url: str, keys: tuple[str, str], clients: NodeClients
) -> None:
    async with CuttableProxy(redis_url) as proxy, running_server(
            server_env(proxy.url, prefix, perm_url, keys)) as server:
        await clients.open("kicked", server.url, "kick me", params=token(keys, "mallory"))
        await clients.open("neighbour", server.url, "kick me", params=token(keys, "alice"))
        await clients.open("elsewhere", server.url, "other room", params=token(keys, "mallory"))
        for name in ("kicked", "neighbour", "elsewhere"):
            await clients.synced(name)
        await wait_until(lambda: _is(subscribers(redis_url, prefix), 1), 10,
                         "the server to listen for commands")

        proxy.cut()
        await wait_until(lambda: _is(subscribers(redis_url, prefix), 0), 10,
                         "Redis to see the server's subscription gone")
        out = await kick(redis_url, prefix, "kick me", "mallory")
        assert "kick sent to 0 ysync processes" in out, "nobody could hear it"
        assert clients.closes("kicked") == []
        proxy.restore()

        await wait_until(lambda: _true(clients.closes("kicked") == [4403]), 20,
                         "the kicked client to be closed with 4403 after Redis came back")
        assert _logged(server, "control channel subscribed again; 1 connection(s) revoked")
        for name in ("neighbour", "elsewhere"):
            # not revoked; a y-websocket awareness renewal (every 15 s) that fell into the cut
            # is closed with 1011 "redis unavailable", as every failed append is, and reconnects
            await wait_until(lambda n=name: _connected(clients, n), 15, f"{name} to be connected")
            assert set(clients.closes(name)) <= {1011}, (name, clients.closes(name))
        info = await clients.call("info", name="kicked")
        assert not info["shouldConnect"], "4403 is final: no reconnect loop"

        # a kick ends sessions: a connection opened after it is the permission callback's call
        await clients.open("back", server.url, "kick me", params=token(keys, "mallory"))
        await clients.synced("back")
        await clients.call("insertText", name="back", text="after the kick")
        await wait_until(lambda: _text_is(clients, "neighbour", "after the kick"), 10,
                         "the neighbour to receive the returning user's update")
        assert clients.closes("back") == []


async def test_kick_during_the_permission_check_ends_the_connection(
    redis_url: str, prefix: str, perm_url: str, keys: tuple[str, str], clients: NodeClients
) -> None:
    async with running_server(server_env(redis_url, prefix, perm_url, keys)) as server:
        await clients.open("steady", server.url, "race", params=token(keys, "alice"))
        await clients.synced("steady")
        Permissions.held.add("mallory")
        await clients.open("late", server.url, "race", params=token(keys, "mallory"))
        await wait_until(lambda: _true("mallory" in Permissions.asked), 10,
                         "the permission check of the late connection to start")
        out = await kick(redis_url, prefix, "race", "mallory")
        assert "kick sent to 1 ysync processes" in out  # the connection is not open yet
        Permissions.release.set()  # the callback says rw, but the kick came after the request

        await wait_until(lambda: _true(clients.closes("late") == [4403]), 10,
                         "the connection admitted during the kick to be closed with 4403")
        assert clients.closes("steady") == []
        assert not (await clients.call("info", name="late"))["syncedOnce"], \
            "the kicked connection was never served"
    assert "revoked by a kick" in server.log_text()


async def test_recheck_applies_a_record_whose_message_was_lost(
    redis_url: str, prefix: str, perm_url: str, keys: tuple[str, str], clients: NodeClients
) -> None:
    env = {**server_env(redis_url, prefix, perm_url, keys), "YSYNC_AUTH_RECHECK_INTERVAL": "1"}
    async with running_server(env) as server:
        await clients.open("kicked", server.url, "sweep", params=token(keys, "mallory"))
        await clients.open("neighbour", server.url, "sweep", params=token(keys, "alice"))
        await clients.synced("kicked")
        await clients.synced("neighbour")
        client = aioredis.Redis.from_url(redis_url)
        try:  # a record with no message: as if the control channel had dropped it
            seconds_now, micros = await client.time()
            now_ms = seconds_now * 1000 + micros // 1000
            await client.zadd(revocations_key(prefix), {record_member("sweep", "mallory"): now_ms})
        finally:
            await client.aclose()
        await wait_until(lambda: _true(clients.closes("kicked") == [4403]), 5,
                         "the re-check sweep to apply the record")
        assert clients.closes("neighbour") == []


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


async def _text_is(clients: NodeClients, name: str, text: str) -> bool:
    return bool((await clients.get(name))["text"] == text)


def _logged(server: ServerProcess, fragment: str) -> bool:
    return any(fragment in line for line in server.stderr_lines)


async def _connected(clients: NodeClients, name: str) -> bool:
    info = await clients.call("info", name=name)
    return bool(info["connected"])
