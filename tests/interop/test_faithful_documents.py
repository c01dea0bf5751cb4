"""What ysync assembles is exactly what the writers wrote, as the real yjs reads it.

ysync relays live updates unchanged, but it builds two things itself: the sync step 2 that
answers a joining client's state vector (from the stored snapshot and the room stream), and the
v2 snapshot its worker persists. Random documents (tests/node/faithful_gen.mjs: 3-4 clients
editing concurrently; JSON objects of 1-20 keys in random insertion order with integer-like
keys, every kind of number, astral strings, binary, formatted text with embeds, XML, nested
types, subdocuments, heavy deletes) are written into a real ysync server over y-websocket, one
room each. Then, for every room, yjs (tests/node/faithful_check.mjs) reads

- the step 2 a fresh joiner receives,
- the step 2 a joiner at an earlier state vector receives, applied to its earlier document,
- the snapshot the worker persisted,
- the step 2 a fresh joiner receives after compaction (snapshot + trimmed stream),

and each must give the writers' document exactly: ``JSON.stringify(type.toJSON())`` of every
root type (object key order included), the delta of every text (attributes included), every
XML element's attributes, every subdocument, and the state vector.

The reference is what yjs itself gives the same reader (a fresh doc applying the writer's
``Y.encodeStateAsUpdate``; the earlier doc applying ``Y.encodeStateAsUpdate(writer, sv)``).
The order of a ``Y.Map``'s entries in ``toJSON()`` is the order yjs integrated them: it
differs between peers with different histories, and in a few documents between yjs's own
assemblies (a fresh doc applying ``Y.mergeUpdates`` of the updates puts some entries
elsewhere): that order is also accepted, but only where nothing else differs. The key order
inside JSON values has no such freedom: it is the order the writer's object had.

A failure counts the differences of each check by kind - the key order inside JSON values
(a value re-encoded on its way, e.g. through pycrdt), the order of ``Y.Map`` entries (structs
sent in an order no yjs assembly gives), different content (with the JSON path of the first
difference) - and shows the first of each kind. The ``strict`` view shows what
``JSON.stringify`` cannot: ``-0`` is ``"$-0"``, a ``Uint8Array`` is ``{"$bin": [...]}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from workers.compactor import Worker
from ysync.config import StorageConfig
from ysync.protocol import SyncStep2, decode_message, encode_sync_step1, encode_sync_update
from ysync.storage.factory import open_storage
from ysync.streams import room_stream_key

from conftest import seconds
from harness import NodeDriver, ServerProcess, running_server, wait_until
from storage_fixtures import make_config

pytestmark = [pytest.mark.node, pytest.mark.anyio]

FIRST_SEED = 7001
DOCUMENTS = 30
OPS = 120
ROOMS_AT_ONCE = 6  # rooms written and checked concurrently

Doc = dict[str, Any]
State = dict[str, Any]


@pytest.fixture(scope="module")
def documents(node_dir: Path) -> list[Doc]:
    done = subprocess.run(
        ["node", "faithful_gen.mjs", "--seed", str(FIRST_SEED), "--count", str(DOCUMENTS),
         "--ops", str(OPS)],
        cwd=node_dir, capture_output=True, text=True, timeout=seconds(120), check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
async def yjs(node_dir: Path) -> AsyncIterator[NodeDriver]:
    async with NodeDriver(node_dir, "faithful_check.mjs") as driver:
        yield driver


@pytest.fixture
def storage_path(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
async def server(redis_url: str, prefix: str, storage_path: Path) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
           "YSYNC_STORAGE_PATH": str(storage_path), "YSYNC_WORKER_ENABLED": "no"}
    async with running_server(env) as srv:
        yield srv


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# --- talking to ysync as y-websocket clients do ------------------------------------------------


def room_of(doc: Doc) -> str:
    return f"faithful-{doc['seed']}"


async def drain(ws: ClientConnection) -> None:
    """Read (and drop) what the server sends a writer, so that it never counts as slow."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


async def stored_updates(redis: aioredis.Redis, prefix: str, room: str) -> int:
    """The number of sync update messages in the room's stream."""
    entries = await redis.xrange(room_stream_key(prefix, room))
    return sum(1 for _, fields in entries if fields[b"m"][:2] == b"\x00\x02")


async def write_room(url: str, room: str, doc: Doc, redis: aioredis.Redis, prefix: str) -> None:
    """Send every update of ``doc`` as its client did (one connection per client, in the
    order the updates were made); return once ysync appended them all to the stream."""
    drains: list[asyncio.Task[None]] = []
    try:
        async with AsyncExitStack() as stack:
            writers: dict[int, ClientConnection] = {}
            for entry in doc["updates"]:
                ws = writers.get(entry["client"])
                if ws is None:
                    ws = await stack.enter_async_context(
                        connect(f"{url}/{room}", max_size=None))
                    writers[entry["client"]] = ws
                    drains.append(asyncio.create_task(drain(ws)))
                await ws.send(encode_sync_update(base64.b64decode(entry["update"])))
            count = len(doc["updates"])

            async def appended() -> bool:
                return await stored_updates(redis, prefix, room) >= count

            await wait_until(appended, 30, f"{count} updates of room {room} in the stream")
    finally:
        for task in drains:  # (they end by themselves once their connection closed)
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)


async def join(url: str, room: str, state_vector: bytes) -> bytes:
    """Connect, send sync step 1 with ``state_vector``; return the update of the step 2."""
    async with connect(f"{url}/{room}", max_size=None) as ws:
        await ws.send(encode_sync_step1(state_vector))
        while True:
            raw = await asyncio.wait_for(ws.recv(), seconds(30))
            assert isinstance(raw, bytes)
            message = decode_message(raw)
            if isinstance(message, SyncStep2):
                return message.update


async def joined_state(yjs: NodeDriver, url: str, doc: Doc, state_vector: bytes,
                       base: str | None = None) -> State:
    """docState of what a joiner at ``state_vector`` (holding ``base``) ends with."""
    try:
        update = await join(url, room_of(doc), state_vector)
    except ConnectionClosed as exc:
        return {"error": f"ysync closed the connection instead of answering ({exc})"}
    return await yjs_state(yjs, doc, update, base=base)


# --- comparing what yjs reads ------------------------------------------------------------------


def _excerpt(expected: str, actual: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
              min(len(expected), len(actual)))
    start = max(0, at - 60)
    return (f"first difference at character {at}:\n"
            f"      expected ...{expected[start:at + 80]}...\n"
            f"      got      ...{actual[start:at + 80]}...")


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def content_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where two JSON values differ when object key order is ignored (None: nowhere)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return (f"{path or '.'}: keys {sorted(set(expected) - set(actual))} missing, "
                    f"{sorted(set(actual) - set(expected))} extra")
        for key in expected:
            found = content_difference(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for i, (a, b) in enumerate(zip(expected, actual, strict=False)):
            found = content_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(expected) == len(actual):
            return None
        return f"{path or '.'}: {len(expected)} items expected, {len(actual)} got"
    if type(expected) is type(actual) and expected == actual:
        return None
    return f"{path or '.'}: expected {_brief(expected)}, got {_brief(actual)}"


def _kind(field: str, name: str, expected: State, actual: State) -> str:
    exp, act = expected[field][name], actual[field].get(name)
    if act is None:
        return "missing"
    if field == "json" and expected["canon"].get(name) == actual["canon"].get(name):
        return "Y.Map entries in another order (same entries, same values)"
    try:
        where = content_difference(json.loads(exp), json.loads(act))
    except ValueError:  # an XML fragment's toString()
        return "different content"
    if where is None:
        return "JSON object keys in another order (same content)"
    return f"different content ({where})"


def differences(expected: State, actual: State,
                alternatives: dict[str, list[str]] | None = None) -> list[str]:
    """What differs between two docStates, most telling first; [] if they are equal.

    ``alternatives`` are root JSONs that other yjs assemblies of the same document give (they
    differ in the order of Y.Map entries only): those are accepted too."""
    if "error" in actual:
        return [f"update: none to check; {actual['error']}"]
    found = []
    if expected["sv"] != actual["sv"]:
        found.append(f"state vector: different; expected {expected['sv']}, got {actual['sv']}")
    for field in ("json", "texts", "xml", "subdocs", "strict"):
        names = sorted(set(expected[field]) | set(actual[field]))
        for name in names:
            if name not in expected[field]:
                found.append(f"{field} {name!r}: not in the writers' document")
                continue
            exp, act = expected[field][name], actual[field].get(name)
            if exp == act or (field == "json" and act in (alternatives or {}).get(name, [])):
                continue
            what = f"{field} {name!r}: {_kind(field, name, expected, actual)}"
            if act is not None:
                what += "; " + _excerpt(exp, act)
            found.append(what)
    return found


class Findings:
    """Mismatches per check, reported together at the end: counts per kind of difference, and
    the first occurrence of each kind."""

    def __init__(self, rooms: int) -> None:
        self.rooms = rooms
        self.by_check: dict[str, list[tuple[str, list[str]]]] = {}

    def add(self, check: str, room: str, expected: State, actual: State,
            alternatives: dict[str, list[str]]) -> None:
        diff = differences(expected, actual, alternatives)
        self.by_check.setdefault(check, [])
        if diff:
            self.by_check[check].append((room, diff))

    def report(self) -> str:
        lines = []
        for check, failures in self.by_check.items():
            if not failures:
                lines.append(f"{check}: all {self.rooms} rooms exact")
                continue
            kinds: dict[str, int] = {}
            first: dict[str, str] = {}
            for room, diff in failures:
                for line in diff:
                    head = line.split(";")[0]  # "<field> <name>: <kind> (<where>)"
                    kind = f"{head.split(' ', 1)[0]}: {head.split(': ', 1)[1].split(' (')[0]}"
                    kinds[kind] = kinds.get(kind, 0) + 1
                    first.setdefault(kind, f"room {room!r}, {line}")
            lines.append(f"{check}: {len(failures)} of {self.rooms} rooms differ")
            for kind, n in sorted(kinds.items(), key=lambda item: -item[1]):
                lines.append(f"  {n} x {kind}, first in {first[kind]}")
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(self.by_check.values())


async def yjs_state(yjs: NodeDriver, doc: Doc, update: bytes, *, v2: bool = False,
                    base: str | None = None) -> State:
    """docState of (base +) ``update`` as yjs reads it; ``{"error": ...}`` if yjs throws."""
    try:
        state: State = await yjs.call("state", roots=doc["roots"], v2=v2, base=base,
                                      update=base64.b64encode(update).decode())
    except AssertionError as exc:  # the driver's answer {"ok": false}: yjs threw
        if str(exc).startswith("faithful_check.mjs ended"):
            raise
        return {"error": "yjs cannot apply it: " + str(exc).split("\n", 1)[0]}
    return state


# --- the tests ---------------------------------------------------------------------------------


async def test_ysync_assembles_the_writers_documents(
    documents: list[Doc], yjs: NodeDriver, server: ServerProcess, redis: aioredis.Redis,
    redis_url: str, prefix: str, storage_path: Path
) -> None:
    findings = Findings(len(documents))
    limit = asyncio.Semaphore(ROOMS_AT_ONCE)

    async def write_and_join(doc: Doc) -> None:
        room = room_of(doc)
        earlier = doc["earlier"]
        # the test's own footing: yjs reads the earlier base as the generator did
        base_state = await yjs_state(yjs, doc, base64.b64decode(earlier["base"]))
        assert not differences(earlier["state"], base_state), f"{room}: checker != generator"
        assert earlier["after"]["canon"] == doc["final"]["canon"], f"{room}: generator bug"
        async with limit:
            await write_room(server.url, room, doc, redis, prefix)
            fresh = await joined_state(yjs, server.url, doc, b"\x00")
            behind = await joined_state(yjs, server.url, doc, base64.b64decode(earlier["sv"]),
                                        base=earlier["base"])
        findings.add("a fresh joiner's sync step 2", room, doc["final"], fresh,
                     doc["alternatives"])
        findings.add("an earlier joiner's base + sync step 2", room, earlier["after"], behind,
                     earlier["alternatives"])

    await asyncio.gather(*(write_and_join(doc) for doc in documents))
    written = sum(await asyncio.gather(
        *(redis.xlen(room_stream_key(prefix, room_of(doc))) for doc in documents)))

    config = make_config(redis_url=redis_url, prefix=prefix, task_debounce=0,
                         min_message_lifetime=0,
                         storage=StorageConfig(kind="filesystem", path=str(storage_path)))
    async with open_storage(config) as storage:
        worker = Worker(redis, storage, config)
        await worker.run(once=True)
        assert worker.failures == 0, "the worker failed to compact a room"
        for doc in documents:
            stored = await storage.retrieve_doc(room_of(doc), "index")
            assert stored is not None, f"nothing persisted for {room_of(doc)}"
            findings.add("the persisted v2 snapshot", room_of(doc), doc["final"],
                         await yjs_state(yjs, doc, stored.update_v2, v2=True),
                         doc["alternatives"])
    left = sum(await asyncio.gather(
        *(redis.xlen(room_stream_key(prefix, room_of(doc))) for doc in documents)))
    assert left < written, "compaction trimmed nothing: the next joins would not read snapshots"

    async def join_after_compaction(doc: Doc) -> None:
        async with limit:
            fresh = await joined_state(yjs, server.url, doc, b"\x00")
        findings.add("a fresh joiner's sync step 2 after compaction", room_of(doc),
                     doc["final"], fresh, doc["alternatives"])

    await asyncio.gather(*(join_after_compaction(doc) for doc in documents))
    assert not findings.failed, ("what ysync assembled is not what the writers wrote:\n"
                                 + findings.report())


async def test_an_object_value_keeps_its_key_order(yjs: NodeDriver, server: ServerProcess,
                                                   redis: aioredis.Redis, prefix: str) -> None:
    """The issue's case: map.set('k', { i: 0, side: 'A', list: [0, 0] })."""
    example: dict[str, Any] = await yjs.call("example")
    doc: Doc = {"roots": example["roots"],
                "updates": [{"client": 4242, "update": example["update"]}]}
    await write_room(server.url, "key-order", doc, redis, prefix)
    fresh = await yjs_state(yjs, doc, await join(server.url, "key-order", b"\x00"))
    assert example["expected"]["json"]["map"] == '{"k":{"i":0,"side":"A","list":[0,0]}}'
    assert fresh["json"]["map"] == '{"k":{"i":0,"side":"A","list":[0,0]}}'
