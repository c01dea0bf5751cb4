"""Real y-websocket clients (npm) syncing through ysync server processes sharing one Redis."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pycrdt
import pytest
import redis.asyncio as aioredis

from harness import NodeClients, ServerProcess, running_server, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.node]


def server_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
            "YSYNC_WORKER_ENABLED": "no", "LOG": "info", **extra}


@pytest.fixture
async def two_servers(redis_url: str, prefix: str) -> AsyncIterator[tuple[ServerProcess, ...]]:
    env = server_env(redis_url, prefix)
    async with running_server(env) as a, running_server(env) as b:
        yield a, b


async def converged(clients: NodeClients, names: list[str], expect: dict[str, object]) -> None:
    async def check() -> bool:
        for name in names:
            state = await clients.get(name)
            if any(state[k] != v for k, v in expect.items()):
                return False
        return True

    await wait_until(check, 15, f"{names} to converge on {expect}")


async def test_two_servers_converge_on_text_map_and_array(
    two_servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    a, b = two_servers
    await clients.open("alice", a.url, "shared doc")
    await clients.open("bob", b.url, "shared doc")
    await clients.synced("alice")
    await clients.synced("bob")
    await clients.call("insertText", name="alice", text="hello ")
    await clients.call("insertText", name="bob", text="world", index=0)
    await clients.call("mapSet", name="alice", key="k", value={"nested": [1, 2, 3]})
    await clients.call("arrayPush", name="bob", values=[1, "two", {"three": 3}])
    await converged(clients, ["alice", "bob"], {
        "map": {"k": {"nested": [1, 2, 3]}},
        "arr": [1, "two", {"three": 3}],
    })
    alice, bob = await clients.get("alice"), await clients.get("bob")
    assert alice["text"] == bob["text"]
    assert sorted(alice["text"]) == sorted("hello world")
    await clients.call("deleteText", name="bob", index=0, length=len(bob["text"]))
    await clients.call("arrayDelete", name="alice", index=0, length=1)
    await converged(clients, ["alice", "bob"], {"text": "", "arr": ["two", {"three": 3}]})


async def test_late_joiner_receives_whole_document(
    two_servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    a, b = two_servers
    await clients.open("first", a.url, "late")
    await clients.synced("first")
    for i in range(20):
        await clients.call("insertText", name="first", text=f"line {i}\n")
    await clients.call("mapSet", name="first", key="done", value=True)
    expected = await clients.get("first")
    await clients.open("late", b.url, "late")
    await clients.synced("late")
    await converged(clients, ["late"], expected)


async def test_awareness_appears_and_disappears(
    two_servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    a, b = two_servers
    await clients.open("watcher", a.url, "presence", awareness={"user": "watcher"})
    await clients.synced("watcher")
    info = await clients.open("visitor", b.url, "presence", awareness={"user": "visitor"})
    await clients.synced("visitor")
    visitor_id = str(info["clientID"])

    async def visitor_seen() -> bool:
        states = await clients.call("awarenessStates", name="watcher")
        return states.get(visitor_id) == {"user": "visitor"}

    await wait_until(visitor_seen, 10, "the visitor's presence at the watcher")
    await clients.call("close", name="visitor")

    async def visitor_gone() -> bool:
        states = await clients.call("awarenessStates", name="watcher")
        return visitor_id not in states

    await wait_until(visitor_gone, 10, "the visitor's presence to disappear")


async def test_redis_layout_matches_y_redis(
    redis_url: str, prefix: str, two_servers: tuple[ServerProcess, ServerProcess],
    clients: NodeClients,
) -> None:
    a, _ = two_servers
    room = "compat late é"
    await clients.open("c", a.url, room, clientID=1)
    await clients.synced("c")
    await clients.call("mapSet", name="c", key="key", value="value")
    stream = f"{prefix}:room:compat%2520late%2520%25C3%25A9:index"
    client = aioredis.Redis.from_url(redis_url)
    try:
        async def has_update() -> bool:
            entries = await client.xrange(stream)
            return any(f[b"m"].startswith(b"\x00\x02") and b"value" in f[b"m"]
                       for _i, f in entries)

        await wait_until(has_update, 10, "the update in the room stream")
        entries = await client.xrange(stream)
        update = [f[b"m"] for _i, f in entries if b"value" in f[b"m"]][0]
        assert update.hex() == "000217010101002801036d6170036b657901770576616c756500"
        for _id, fields in entries:
            assert list(fields) == [b"m"]
        worker = f"{prefix}:worker"
        tasks = await client.xrange(worker)
        assert [f[b"compact"].decode() for _i, f in tasks] == [stream]
        groups = await client.xinfo_groups(worker)
        assert [(g["name"].decode(), g["pending"]) for g in groups] == [(worker, 1)]
        pending = await client.xpending_range(worker, worker, min="-", max="+", count=10)
        assert [p["consumer"].decode() for p in pending] == ["pending"]
    finally:
        await client.aclose()

    state = base64.b64decode(await clients.call("stateV1", name="c"))
    doc: pycrdt.Doc[pycrdt.Map[str]] = pycrdt.Doc()
    doc.apply_update(state)
    assert doc.get("map", type=pycrdt.Map).to_py() == {"key": "value"}


async def test_document_of_several_megabytes(
    two_servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    a, b = two_servers
    await clients.open("writer", a.url, "big")
    await clients.open("reader", b.url, "big")
    await clients.synced("writer")
    await clients.synced("reader")
    size = await clients.call("bigText", name="writer", size=4 * 1024 * 1024, chunk=1000)
    assert size >= 4 * 1024 * 1024

    async def reader_has_it() -> bool:
        return bool(await clients.call("textLength", name="reader") == size)

    await wait_until(reader_has_it, 60, "the reader to receive 4 MiB", interval=0.2)
    await clients.open("late", a.url, "big")
    await clients.synced("late", within=60)
    assert await clients.call("textLength", name="late") == size
    writer_state = await clients.call("stateV1", name="writer")
    late_state = await clients.call("stateV1", name="late")
    assert writer_state == late_state


async def test_many_concurrent_clients_converge(
    two_servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    names = [f"c{i}" for i in range(24)]
    for i, name in enumerate(names):
        await clients.open(name, two_servers[i % 2].url, "crowd", awareness={"n": i})
    for name in names:
        await clients.synced(name)
    for round_ in range(3):
        for name in names:
            await clients.call("insertText", name=name, text=f"<{name}.{round_}>", index=0)
            await clients.call("mapSet", name=name, key=name, value=round_)
    expected_map = {name: 2 for name in names}

    async def all_equal() -> bool:
        states = [await clients.get(name) for name in names]
        first = states[0]
        return first["map"] == expected_map and all(s == first for s in states) and all(
            f"<{name}.{r}>" in first["text"] for name in names for r in range(3))

    await wait_until(all_equal, 30, "24 clients on two servers to converge", interval=0.2)

    async def everyone_sees_everyone() -> bool:
        for name in names:
            states = await clients.call("awarenessStates", name=name)
            if len(states) != len(names):
                return False
        return True

    await wait_until(everyone_sees_everyone, 15, "every client to see 24 presences")
