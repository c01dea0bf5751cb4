"""ysync beside the real JavaScript y-redis 0.1.6: one Redis, one PostgreSQL, both servers, both
workers, real y-websocket clients on each side.

Every document is compared as the strings Yjs prints in Node (``JSON.stringify`` of the map and
the array, of the text's delta; binary values as byte lists), so a server or worker that changes
the order of a JSON object's keys, drops a formatting attribute or re-encodes a binary value is
caught. (The keys of a Y.Map are printed sorted: their order is the order entries reached a
replica, not part of the document.) The first writer on the y-redis server is the reference:
y-redis relays every update byte for byte and builds documents with Yjs itself.

The peer comes from ``$YSYNC_YREDIS_PEER`` or ``../shared/peers/y-redis-0.1.6/setup``
(tests/yredis_peer.py); without either the tests are skipped.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql

from ysync.auth import generate_keypair, load_private_key, mint_token

from harness import (
    REPO,
    NodeClients,
    PermissionEndpoint,
    ServerProcess,
    running_server,
    serving_http,
    wait_until,
)
from yredis_peer import ChildProcess, YRedisServer, yredis_server, yredis_worker

pytestmark = [pytest.mark.anyio, pytest.mark.node, pytest.mark.slow,
              pytest.mark.usefixtures("yredis_peer_dir")]

TABLE = "yredis_docs_v1"
#: ms settings for both workers: claim a task soon, trim everything compacted
TASK_DEBOUNCE = "200"
MIN_MESSAGE_LIFETIME = "0"

Dump = dict[str, str]


# --- the permission endpoint, the keys, the database ---------------------------------------------


class Permissions(PermissionEndpoint):
    """``GET /perm/<room>/<userid>`` (what y-redis and ysync ask): read-write for everyone."""

    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.asked.append(self.path)
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != "perm":
            self.answer(404, b"not a permission request")
            return
        self.grant(parts[2], parts[3], "rw")


@pytest.fixture(scope="module")
def perm_url() -> Iterator[str]:
    Permissions.asked = []
    with serving_http(Permissions) as base:
        yield base + "/perm"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    """(public JWK, private JWK): AUTH_PUBLIC_KEY of both servers, and the tokens' signer."""
    return generate_keypair()


def _admin_candidates() -> list[str]:
    named = os.environ.get("YSYNC_TEST_POSTGRES")
    if named:
        return [named]
    return [f"postgresql://{user}@127.0.0.1:5432/postgres" for user in ("postgres", "root")]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module (dropped afterwards); its URL names the user,
    as the y-redis ``postgres`` client needs."""
    admin = ""
    errors: list[str] = []
    for candidate in _admin_candidates():
        try:
            with psycopg.connect(candidate, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            admin = candidate
            break
        except psycopg.Error as exc:
            errors.append(f"{candidate}: {exc}".strip())
    if not admin:
        pytest.skip("no PostgreSQL for the y-redis peer tests (127.0.0.1:5432, trust auth, user "
                    "postgres or root; or $YSYNC_TEST_POSTGRES): " + "; ".join(errors))
    name = f"ysync_yredis_peer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin)
    user = info.get("user") or "postgres"
    url = f"postgres://{user}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


# --- both servers on one Redis prefix and one database ------------------------------------------


@dataclass
class Stack:
    """A ysync server and a y-redis server on one Redis prefix and one database; the workers
    are started only where a test wants one of them to compact."""

    peer: Path
    env: dict[str, str]
    prefix: str
    database: str
    redis: aioredis.Redis
    keys: tuple[str, str]
    ysync: ServerProcess | None = None
    yredis: YRedisServer | None = None
    _users: dict[str, str] = field(default_factory=dict)

    def params(self, user: str) -> dict[str, str]:
        """The y-websocket ``params`` that authenticate ``user`` (``?yauth=<token>``)."""
        if user not in self._users:
            self._users[user] = mint_token(load_private_key(self.keys[1]), user, 600)
        return {"yauth": self._users[user]}

    @property
    def ysync_url(self) -> str:
        assert self.ysync is not None
        return self.ysync.url

    @property
    def yredis_url(self) -> str:
        assert self.yredis is not None
        return self.yredis.url

    def server_logs(self) -> str:
        """The last lines both servers printed (for failure messages)."""
        ysync = self.ysync.log_text() if self.ysync is not None else ""
        yredis = self.yredis.log_text() if self.yredis is not None else ""
        return f"ysync server said:\n{ysync[-6000:]}\ny-redis server said:\n{yredis[-6000:]}"

    def stream(self, room: str) -> str:
        return f"{self.prefix}:room:{room}:index"

    def yredis_worker(self) -> AbstractAsyncContextManager[ChildProcess]:
        return yredis_worker(self.peer, self.env)

    def ysync_worker(self) -> ChildProcess:
        return ChildProcess("ysync worker", [sys.executable, "-m", "workers.cli"], self.env, REPO)

    async def snapshot_refs(self, room: str) -> list[int]:
        """The ``r`` of every row of ``room`` in ``yredis_docs_v1``."""
        async with await psycopg.AsyncConnection.connect(self.database) as conn:
            cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
            exists = await cur.fetchone()
            if not exists or not exists[0]:
                return []
            cur = await conn.execute(f"SELECT r FROM {TABLE} WHERE room = %s AND doc = 'index' "
                                     "ORDER BY r", (room,))
            rows = await cur.fetchall()
        return [row[0] for row in rows]

    async def first_entry(self, room: str) -> bytes | None:
        entries = await self.redis.xrange(self.stream(room), count=1)
        first = entries[0][0] if entries else None
        return first if isinstance(first, bytes) else None

    async def wait_compacted(self, room: str, worker: ChildProcess, what: str) -> list[int]:
        """Wait until a new snapshot of ``room`` is stored and its stream trimmed; the refs."""
        refs_before = await self.snapshot_refs(room)
        first_before = await self.first_entry(room)
        assert first_before is not None, f"{room}: nothing in the stream to compact"

        async def compacted() -> bool:
            if not worker.running:
                raise AssertionError(f"{worker.name} exited:\n{worker.log_text()}")
            refs = await self.snapshot_refs(room)
            return bool(refs) and refs != refs_before and \
                await self.first_entry(room) != first_before

        try:
            await wait_until(compacted, 30, f"{what} to store a snapshot of {room!r} and trim "
                             "its stream")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.name} said:\n{worker.log_text()}") from None
        return await self.snapshot_refs(room)


@pytest.fixture
async def stack(yredis_peer_dir: Path, redis_url: str, prefix: str, database: str,
                perm_url: str, keys: tuple[str, str]) -> AsyncIterator[Stack]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "POSTGRES": database,
           "AUTH_PUBLIC_KEY": keys[0], "AUTH_PERM_CALLBACK": perm_url,
           "REDIS_TASK_DEBOUNCE": TASK_DEBOUNCE, "REDIS_MIN_MESSAGE_LIFETIME": MIN_MESSAGE_LIFETIME,
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_WORKER_IDLE_WAIT": "0.1"}
    client = aioredis.Redis.from_url(redis_url)
    peers = Stack(yredis_peer_dir, env, prefix, database, client, keys)
    try:
        # one after the other: both create the table when it is missing
        async with running_server(env) as ysync:
            async with yredis_server(yredis_peer_dir, env) as yredis:
                peers.ysync, peers.yredis = ysync, yredis
                yield peers
    finally:
        await client.aclose()


# --- content, and comparing documents ------------------------------------------------------------


def keyed(side: str, n: int) -> dict[str, Any]:
    """An object whose key order Yjs keeps (JavaScript puts the integer keys first)."""
    return {"i": n, "side": side, "list": [n, n], "10": "x", "2": "y", "nested": {"z": 1, "a": 2}}


LINK = {"bold": True, "color": "#f00", "link": {"href": "x", "title": "y"}}


async def write_round_one(clients: NodeClients, name: str, side: str) -> None:
    """Maps, formatted text, an embed, binary values, a nested map, and deletes."""
    call = clients.call
    await call("mapSet", name=name, key="k", value=keyed(side, 0))
    await call("mapSet", name=name, key=f"k{side}", value=keyed(side, 1))
    await call("mapSetRich", name=name, key=f"bin{side}", value={"$bytes": [0, 1, 2, 254, 255]})
    await call("mapSetRich", name=name, key=f"any{side}",
               value={"zz": {"$bytes": [9, 8, 7]}, "aa": "plain", "mm": [1, {"y": 2, "b": 3}]})
    await call("mapSetSubmap", name=name, key=f"sub{side}",
               entries={"zeta": {"q": 1, "b": 2}, "alpha": side})
    await call("mapSet", name=name, key=f"gone{side}", value={"x": 1, "a": 1})
    await call("insertFormatted", name=name, text=f"<{side} formatted> ", attrs=LINK)
    await call("insertEmbed", name=name, embed={"image": f"{side}.png", "width": 3, "alt": "pic"},
               attrs={"link": {"title": "t", "href": "h"}})
    await call("insertFormatted", name=name, text=f"<{side} plain> ", attrs={})
    await call("arrayPushRich", name=name, values=[
        {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}, {"$bytes": [7, 7, 1 if side == "A" else 2]},
        f"{side}-gone", f"{side}-stays", keyed(side, 2)])
    await call("mapDelete", name=name, key=f"gone{side}")
    await call("mapSet", name=name, key=f"done1{side}", value=True)


async def write_round_two(clients: NodeClients, name: str, side: str, tag: str) -> None:
    """Deletes and formatting of what both wrote; new values under ``tag``."""
    call = clients.call
    await call("formatText", name=name, index=0, length=3,
               attrs={"italic": True, "color": "#0f0", "font": {"size": 3, "family": "x"}})
    await call("deleteText", name=name, index=4 if side == "A" else 8, length=2)
    await call("arrayDelete", name=name, index=0 if side == "A" else 1, length=1)
    await call("mapSet", name=name, key=f"{tag}{side}", value=keyed(side, 3))
    await call("mapSet", name=name, key=f"done-{tag}{side}", value=True)


async def dump(clients: NodeClients, name: str) -> Dump:
    result: Dump = await clients.call("dump", name=name)
    return result


async def converge(clients: NodeClients, names: list[str], markers: list[str],
                   stack: Stack | None = None) -> Dump:
    """Wait until every client has the ``markers`` map keys and the same document (as parsed
    values: a change of key order alone is what the string comparisons catch); the dump of the
    first client."""

    last: list[Dump] = []

    async def same() -> bool:
        last[:] = [await dump(clients, name) for name in names]
        if any(marker not in json.loads(d["map"]) for d in last for marker in markers):
            return False
        return all(parsed(d) == parsed(last[0]) for d in last)

    try:
        await wait_until(same, 20, f"{names} to converge with {markers}")
    except AssertionError as exc:
        state = "\n".join(f"  {name}: {d} (closes {clients.closes(name)})"
                          for name, d in zip(names, last, strict=True))
        logs = stack.server_logs() if stack is not None else ""
        raise AssertionError(f"{exc}; last documents:\n{state}\n{logs}") from None
    return await dump(clients, names[0])


def parsed(document: Dump) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in document.items()}


def differences(expected: Dump, actual: Dump, who: str) -> list[str]:
    """What differs, per shared type, saying whether only the order of object keys does."""
    found = []
    for key in expected:
        if actual[key] == expected[key]:
            continue
        how = ("only the order of JSON object keys differs"
               if json.loads(actual[key]) == json.loads(expected[key]) else "content differs")
        found.append(f"{who}: {key}: {how}\n  expected {expected[key]}\n  actual   {actual[key]}")
    return found


async def check_fresh_clients(clients: NodeClients, stack: Stack, room: str, expected: Dump,
                              tag: str) -> list[str]:
    """Fresh clients on both servers: the differences of their documents from ``expected``."""
    found = []
    for server, url in (("ysync", stack.ysync_url), ("y-redis", stack.yredis_url)):
        name = f"{tag}-{server}"
        await clients.open(name, url, room, params=stack.params(name))
        await clients.synced(name)
        found += differences(expected, await dump(clients, name), f"{tag} client on {server}")
    return found


async def open_writers(clients: NodeClients, stack: Stack, room: str) -> Dump:
    """Writer A on ysync, writer B on y-redis, two rounds of writes; B's document once both
    converged (the reference: y-redis passes A's updates on unchanged)."""
    await clients.open("A", stack.ysync_url, room, params=stack.params("A"))
    await clients.open("B", stack.yredis_url, room, params=stack.params("B"))
    await clients.synced("A")
    await clients.synced("B")
    await write_round_one(clients, "A", "A")
    await write_round_one(clients, "B", "B")
    await converge(clients, ["B", "A"], ["done1A", "done1B"], stack)
    await write_round_two(clients, "A", "A", "r2")
    await write_round_two(clients, "B", "B", "r2")
    return await converge(clients, ["B", "A"], ["done-r2A", "done-r2B"], stack)


def report(found: list[str]) -> None:
    assert not found, "\n".join(found)


# --- the scenarios -------------------------------------------------------------------------------


async def test_late_joiners_on_both_servers_match_the_writers(
    stack: Stack, clients: NodeClients
) -> None:
    room = "late-joiners"
    expected = await open_writers(clients, stack, room)
    found = differences(expected, await dump(clients, "A"), "writer on ysync")
    found += await check_fresh_clients(clients, stack, room, expected, "late")
    asked = {path for path in Permissions.asked if f"/{room}/" in path}
    assert f"/perm/{room}/B" in asked and f"/perm/{room}/late-y-redis" in asked, asked
    report(found)


async def test_after_the_yredis_worker_compacted(stack: Stack, clients: NodeClients) -> None:
    room = "yredis-compacted"
    expected = await open_writers(clients, stack, room)
    async with stack.yredis_worker() as worker:
        refs = await stack.wait_compacted(room, worker, "the y-redis worker")
    assert len(refs) == 1, refs
    report(await check_fresh_clients(clients, stack, room, expected, "fresh"))


async def test_after_the_ysync_worker_compacted(stack: Stack, clients: NodeClients) -> None:
    room = "ysync-compacted"
    expected = await open_writers(clients, stack, room)
    async with stack.ysync_worker() as worker:
        refs = await stack.wait_compacted(room, worker, "the ysync worker")
    assert len(refs) == 1, refs
    report(await check_fresh_clients(clients, stack, room, expected, "fresh"))


@pytest.mark.parametrize("compactor", ["y-redis", "ysync"])
async def test_a_snapshot_alone_is_read_by_both_servers(
    compactor: str, stack: Stack, clients: NodeClients
) -> None:
    """The stream is deleted after compaction: the snapshot one side wrote is all there is."""
    room = f"snapshot-by-{compactor}"
    expected = await open_writers(clients, stack, room)
    await clients.call("close", name="A")
    await clients.call("close", name="B")
    worker_cm = stack.yredis_worker() if compactor == "y-redis" else stack.ysync_worker()
    async with worker_cm as worker:
        await stack.wait_compacted(room, worker, f"the {compactor} worker")
    await stack.redis.delete(stack.stream(room))
    report(await check_fresh_clients(clients, stack, room, expected, "fresh"))


async def test_workers_take_turns_on_one_room(stack: Stack, clients: NodeClients) -> None:
    """y-redis compacts, ysync merges that snapshot with new edits, y-redis merges ysync's."""
    room = "taking-turns"
    await open_writers(clients, stack, room)
    turns = [("y-redis", stack.yredis_worker), ("ysync", stack.ysync_worker),
             ("y-redis", stack.yredis_worker)]
    refs: list[int] = []
    found: list[str] = []
    for turn, (compactor, start_worker) in enumerate(turns):
        async with start_worker() as worker:
            new_refs = await stack.wait_compacted(room, worker, f"the {compactor} worker")
        assert len(new_refs) == 1 and new_refs != refs, (refs, new_refs)
        refs = new_refs
        # writers that joined from this snapshot, one on each server, edit on
        a, b = f"A{turn}", f"B{turn}"
        await clients.open(a, stack.ysync_url, room, params=stack.params(a))
        await clients.open(b, stack.yredis_url, room, params=stack.params(b))
        await clients.synced(a)
        await clients.synced(b)
        await write_round_two(clients, a, "A", f"t{turn}")
        await write_round_two(clients, b, "B", f"t{turn}")
        # B, the first writer on y-redis, stays the reference: it saw every update as sent
        expected = await converge(clients, ["B", b, a, "A"],
                                  [f"done-t{turn}A", f"done-t{turn}B"], stack)
        found += await check_fresh_clients(clients, stack, room, expected, f"turn {turn}")
    report(found)
