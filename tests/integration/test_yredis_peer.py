"""ysync beside the real JavaScript y-redis 0.1.6: one Redis, one storage (PostgreSQL, or S3: a
``moto_server`` of the module's own, bucket ``ydocs`` as y-redis has it), both servers, both
workers, real y-websocket clients on each side. Every scenario runs on both storages.

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

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql

from ysync.auth import generate_keypair, load_private_key, mint_token
from ysync.storage.base import merge_snapshots
from ysync.streams import encode_uri_component

from harness import (
    REPO,
    NodeClients,
    PermissionEndpoint,
    ServerProcess,
    running_server,
    serving_http,
    wait_until,
)
from storage_fixtures import MotoS3, doc_json_of_v2, free_port, start_moto_server
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


@pytest.fixture(scope="module")
def ydocs_s3() -> Iterator[MotoS3]:
    """An S3 server of this module's own, without buckets: the servers create ``ydocs``."""
    server = MotoS3(free_port())
    proc = start_moto_server(server.port)
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def storage_env(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """y-redis's variables for ``kind``, which ysync reads too (storage.kind auto)."""
    if kind == "postgres":
        return {"POSTGRES": request.getfixturevalue("database")}
    s3: MotoS3 = request.getfixturevalue("ydocs_s3")
    return {"S3_ENDPOINT": "127.0.0.1", "S3_PORT": str(s3.port), "S3_SSL": "false",
            "S3_ACCESS_KEY": s3.access_key, "S3_SECRET_KEY": s3.secret_key}


# --- both servers on one Redis prefix and one storage -------------------------------------------


@dataclass
class Stack:
    """A ysync server and a y-redis server on one Redis prefix and one storage (a database, or
    the bucket ``ydocs`` of ``s3``); the workers are started only where a test wants one of them
    to compact."""

    peer: Path
    env: dict[str, str]
    prefix: str
    database: str
    redis: aioredis.Redis
    keys: tuple[str, str]
    s3: MotoS3 | None = None
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

    async def snapshot_refs(self, room: str) -> list[Any]:
        """The ``r`` of every row of ``room`` in ``yredis_docs_v1``, or the name of every
        object of ``room`` in the bucket ``ydocs``."""
        if self.s3 is not None:
            folder = f"{encode_uri_component(room)}/index/"
            return sorted(await asyncio.to_thread(self.s3.objects, "ydocs", folder))
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

    async def compacted_by(self, start: Callable[[], AbstractAsyncContextManager[ChildProcess]],
                           room: str, what: str) -> list[Any]:
        """Start a worker (``start``), wait until one new snapshot of ``room`` is stored (those
        it merged deleted) and its stream trimmed, stop the worker; the refs. (What was there
        is noted before the worker starts: it may compact at once.)"""
        refs_before = await self.snapshot_refs(room)
        first_before = await self.first_entry(room)
        assert first_before is not None, f"{room}: nothing in the stream to compact"
        async with start() as worker:

            async def compacted() -> bool:
                if not worker.running:
                    raise AssertionError(f"{worker.name} exited:\n{worker.log_text()}")
                refs = await self.snapshot_refs(room)
                # (y-redis deletes the merged snapshots while it trims: wait for both)
                return len(refs) == 1 and refs != refs_before and \
                    await self.first_entry(room) != first_before

            try:
                await wait_until(compacted, 30, f"{what} to store a snapshot of {room!r} and "
                                 "trim its stream")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{worker.name} said:\n{worker.log_text()}") \
                    from None
        return await self.snapshot_refs(room)

    async def stored(self, room: str) -> dict[str, Any]:
        """The document that every stored snapshot of ``room`` makes, as JSON (decoded here,
        read straight from the storage)."""
        if self.s3 is not None:
            objects = await asyncio.to_thread(self.s3.objects, "ydocs",
                                              f"{encode_uri_component(room)}/index/")
            updates = list(objects.values())
        else:
            async with await psycopg.AsyncConnection.connect(self.database) as conn:
                cur = await conn.execute(f"SELECT update FROM {TABLE} WHERE room = %s AND "
                                         "doc = 'index'", (room,))
                updates = [bytes(row[0]) for row in await cur.fetchall()]
        return doc_json_of_v2(merge_snapshots(updates)) if updates else {}


@pytest.fixture(params=["postgres", "s3"])
async def stack(request: pytest.FixtureRequest, yredis_peer_dir: Path, redis_url: str,
                prefix: str, perm_url: str, keys: tuple[str, str]) -> AsyncIterator[Stack]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **storage_env(request.param, request),
           "AUTH_PUBLIC_KEY": keys[0], "AUTH_PERM_CALLBACK": perm_url,
           "REDIS_TASK_DEBOUNCE": TASK_DEBOUNCE, "REDIS_MIN_MESSAGE_LIFETIME": MIN_MESSAGE_LIFETIME,
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_WORKER_IDLE_WAIT": "0.1"}
    client = aioredis.Redis.from_url(redis_url)
    s3 = request.getfixturevalue("ydocs_s3") if request.param == "s3" else None
    peers = Stack(yredis_peer_dir, env, prefix, env.get("POSTGRES", ""), client, keys, s3)
    try:
        # one after the other: both create the table (the bucket) when it is missing
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
    refs = await stack.compacted_by(stack.yredis_worker, room, "the y-redis worker")
    assert len(refs) == 1, refs
    report(await check_fresh_clients(clients, stack, room, expected, "fresh"))


async def test_after_the_ysync_worker_compacted(stack: Stack, clients: NodeClients) -> None:
    room = "ysync-compacted"
    expected = await open_writers(clients, stack, room)
    refs = await stack.compacted_by(stack.ysync_worker, room, "the ysync worker")
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
    start = stack.yredis_worker if compactor == "y-redis" else stack.ysync_worker
    await stack.compacted_by(start, room, f"the {compactor} worker")
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
        new_refs = await stack.compacted_by(start_worker, room, f"the {compactor} worker")
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


@contextlib.contextmanager
def frozen(worker: ChildProcess | None) -> Iterator[None]:
    """``worker`` stopped (SIGSTOP) meanwhile: a task it claimed waits for the other worker to
    take it over, as when a worker stalls."""
    if worker is None or worker.proc is None:
        yield
        return
    worker.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        worker.proc.send_signal(signal.SIGCONT)


async def test_both_workers_at_once_on_one_room(stack: Stack, clients: NodeClients) -> None:
    """Both workers run while the writers write: they race for the room's tasks, each
    compaction merges what the other stored, and in two rounds one of them is frozen so that
    each surely compacts (taking over the task the frozen one may hold); what is left in the
    end is what the writers wrote."""
    room = "both-workers"
    async with stack.yredis_worker() as yredis_worker, stack.ysync_worker() as ysync_worker:

        def running() -> None:
            for worker in (yredis_worker, ysync_worker):
                assert worker.running, f"{worker.name} exited:\n{worker.log_text()}"

        async def stored(markers: set[str]) -> bool:
            running()
            return markers <= set((await stack.stored(room)).get("map", {}))

        await open_writers(clients, stack, room)
        for turn, stalled in enumerate([None, ysync_worker, yredis_worker, None]):
            with frozen(stalled):
                for side in ("A", "B"):
                    await clients.call("insertFormatted", name=side, text=f"<{side}{turn}>",
                                       attrs={"bold": True} if turn % 2 else {})
                    await clients.call("mapSet", name=side, key=f"w{turn}{side}",
                                       value=keyed(side, turn))
                    await clients.call("mapSet", name=side, key=f"done-w{turn}{side}",
                                       value=True)
                markers = {f"done-w{turn}A", f"done-w{turn}B"}
                expected = await converge(clients, ["B", "A"], sorted(markers), stack)
                await wait_until(lambda: stored(markers), 30,  # noqa: B023 - awaited here
                                 f"a worker to store round {turn}")
        await clients.call("close", name="A")
        await clients.call("close", name="B")

        async def all_compacted() -> bool:
            running()
            return await stack.redis.xlen(stack.stream(room)) == 0 and \
                len(await stack.snapshot_refs(room)) == 1

        await wait_until(all_compacted, 30, "the workers to compact everything into one "
                         "snapshot")
    await stack.redis.delete(stack.stream(room))  # the snapshot alone
    report(await check_fresh_clients(clients, stack, room, expected, "fresh"))


# --- the document API's history beside y-redis ---------------------------------------------------


async def test_history_on_leaves_yredis_working_on_the_storage(
    stack: Stack, clients: NodeClients
) -> None:
    """ysync's worker with ``history.enabled`` records versions beside the snapshots (rows of
    ``ysync_versions_v1``, or objects under ``%ysync-versions/`` in the bucket): y-redis's worker
    and server go on reading and compacting the storage, and a rollback to a version reaches
    the clients of both servers."""
    from ysync.config import load_config
    from ysync.docs import load_doc
    from ysync.protocol import encode_sync_update
    from ysync.rollback import rollback
    from ysync.storage.factory import open_storage
    from ysync.storage.versions import versions_of
    from ysync.streams import Layout, Scripts

    room = "history-beside-yredis"
    history_env = {**stack.env, "YSYNC_HISTORY_ENABLED": "yes"}

    def history_worker() -> ChildProcess:
        return ChildProcess("ysync worker (history on)", [sys.executable, "-m", "workers.cli"],
                            history_env, REPO)

    first = await open_writers(clients, stack, room)
    assert len(await stack.compacted_by(history_worker, room, "the history worker")) == 1
    first_stored = await stack.stored(room)
    await write_round_two(clients, "A", "A", "r3")
    await write_round_two(clients, "B", "B", "r3")
    second = await converge(clients, ["B", "A"], ["done-r3A", "done-r3B"], stack)
    assert len(await stack.compacted_by(stack.yredis_worker, room, "the y-redis worker")) == 1
    report(await check_fresh_clients(clients, stack, room, second, "after-yredis"))
    async with open_storage(load_config(environ=history_env)) as storage:
        store = versions_of(storage)
        (version,) = await store.versions(room, "index")
        data = await store.read(room, "index", version.id)
        assert data is not None and doc_json_of_v2(data) == first_stored
        loaded = await load_doc(stack.redis, storage, stack.prefix, room, "index")
    change = rollback(loaded.full_update, data)
    await Scripts(stack.redis, Layout(stack.prefix)).append(stack.stream(room),
                                                   encode_sync_update(change.update))

    async def back() -> bool:
        documents = [parsed(await dump(clients, name)) for name in ("A", "B")]
        return all(document == parsed(first) for document in documents)

    await wait_until(back, 20, "both writers (on ysync and on y-redis) back at the version")
    report(await check_fresh_clients(clients, stack, room, first, "rolled-back"))
