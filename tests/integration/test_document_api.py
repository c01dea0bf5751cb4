"""The document API end to end (docs/api.md): ysync server processes on one Redis and one
storage, real y-websocket clients, the real yjs reading what the API returns, and the Python
client ``ysync.client``.

- an update POSTed to one server's API reaches live clients on both servers;
- GET returns what yjs decodes to the clients' document (JSON object key order, text deltas
  with attributes, state vector), in v1, in v2 and as the diff for an earlier state vector;
- the worker records versions after compactions (and thins them by the retention policy);
- a rollback makes every connected client, fresh joiners and the next compaction hold the
  version again;
- the embedded default serves the API too;
- with authentication: refused without a token or secret, a read-only token cannot write, a
  room the permission callback denies is refused, an oversized body is refused; nothing is
  written by a refused request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import redis.asyncio as aioredis

from ysync.auth import generate_keypair, load_private_key, mint_token
from ysync.client import ApiError, DocumentClient
from ysync.gate import room_as_sent
from ysync.streams import room_stream_key
from ysync.updates import v1_to_v2

from harness import (
    NodeClients,
    NodeDriver,
    PermissionEndpoint,
    ServerProcess,
    running_server,
    serving_http,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.node]

ROOTS = {"map": "map", "arr": "array", "text": "text"}
LINK = {"bold": True, "link": {"href": "x", "title": "y"}}


def keyed(n: int) -> dict[str, Any]:
    """An object whose key order Yjs keeps (integer keys first, as JavaScript)."""
    return {"z": n, "a": [n, n], "10": "x", "2": "y", "nested": {"q": 1, "b": 2}}


@pytest.fixture
async def servers(redis_url: str, prefix: str,
                  tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Server A (with the in-process worker, history on) and server B, on one Redis prefix and
    one filesystem storage, both serving the API."""
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
           "YSYNC_STORAGE_PATH": str(tmp_path / "storage"), "YSYNC_API_ENABLED": "yes",
           "REDIS_TASK_DEBOUNCE": "300", "REDIS_MIN_MESSAGE_LIFETIME": "0",
           "YSYNC_WORKER_IDLE_WAIT": "0.1", "YSYNC_HISTORY_ENABLED": "yes", "LOG": "info"}
    async with running_server({**env, "YSYNC_WORKER_ENABLED": "yes"}) as a, \
            running_server({**env, "YSYNC_WORKER_ENABLED": "no"}) as b:
        yield a, b


@pytest.fixture
async def yjs(node_dir: Path) -> AsyncIterator[NodeDriver]:
    """The real yjs reading updates (tests/node/faithful_check.mjs: ``state``)."""
    async with NodeDriver(node_dir, "faithful_check.mjs") as driver:
        yield driver


async def yjs_state(yjs: NodeDriver, update: bytes, *, v2: bool = False,
                    base: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await yjs.call("state", roots=ROOTS, v2=v2, base=base,
                                            update=base64.b64encode(update).decode())
    return result


def same_document(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same content, JSON key order of values, text deltas and state vector (docState)."""
    return all(a[k] == b[k] for k in ("strict", "texts", "sv"))


async def converged(clients: NodeClients, names: list[str], expect: dict[str, Any],
                    what: str) -> None:
    async def check() -> bool:
        for name in names:
            state = await clients.get(name)
            if any(state[k] != v for k, v in expect.items()):
                return False
        return True

    await wait_until(check, 20, what)


async def agreed(clients: NodeClients, names: list[str], what: str) -> dict[str, Any]:
    """Wait until the clients hold the same document; that document."""
    last: list[dict[str, Any]] = []

    async def same() -> bool:
        last[:] = [await clients.get(name) for name in names]
        return all(state == last[0] for state in last)

    await wait_until(same, 20, what)
    return last[0]


async def client_update(clients: NodeClients, name: str) -> bytes:
    return base64.b64decode(await clients.call("stateV1", name=name))


def edited(document_v1: bytes, edit: Any, client_id: int) -> bytes:
    """What a backend job writes: the document read, edited with pycrdt, the change only."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc.apply_update(document_v1)
    before = doc.get_state()
    edit(doc)
    return doc.get_update(before)


async def write_rich(clients: NodeClients, name: str, tag: str) -> None:
    call = clients.call
    await call("mapSet", name=name, key=f"k{tag}", value=keyed(1))
    await call("mapSetSubmap", name=name, key=f"sub{tag}", entries={"zeta": {"q": 1}, "a": tag})
    await call("insertFormatted", name=name, text=f"<{tag} formatted> ", attrs=LINK)
    await call("insertEmbed", name=name, embed={"image": f"{tag}.png", "w": 3}, attrs={})
    await call("insertText", name=name, text=f"plain {tag} ")
    await call("arrayPushRich", name=name, values=[keyed(2), f"{tag}-item"])


async def test_posted_updates_reach_live_clients_and_get_is_the_clients_document(
    servers: tuple[ServerProcess, ServerProcess], clients: NodeClients, yjs: NodeDriver
) -> None:
    a, b = servers
    room = "api room é"
    await clients.open("alice", a.url, room)
    await clients.open("bob", b.url, room)
    await clients.synced("alice")
    await clients.synced("bob")
    await write_rich(clients, "alice", "A")
    await clients.call("mapSet", name="alice", key="doneA", value=True)
    await converged(clients, ["bob"], {"map": (await clients.get("alice"))["map"]},
                    "bob to have alice's writes")
    async with DocumentClient(await b.api_url()) as api_b, \
            DocumentClient(await a.api_url()) as api_a:
        document = await api_b.get_document(room)
        change = edited(document, lambda doc: doc.get("map", type=pycrdt.Map).__setitem__(
            "fromApi", "v1 update"), 9001)
        assert (await api_b.apply_update(room, change))["appended"] is True
        change_v2 = v1_to_v2(edited(document, lambda doc: doc.get(
            "arr", type=pycrdt.Array).append("from the API, v2"), 9002))
        await api_a.apply_update(room, change_v2, format="v2")

        async def both_have_it() -> bool:
            for name in ("alice", "bob"):
                state = await clients.get(name)
                if state["map"].get("fromApi") != "v1 update" or \
                        "from the API, v2" not in state["arr"]:
                    return False
            return True

        await wait_until(both_have_it, 15, "both clients to receive the POSTed updates")
        earlier = await client_update(clients, "bob")
        earlier_state = await yjs_state(yjs, earlier)
        await write_rich(clients, "bob", "B")
        await clients.call("mapSet", name="bob", key="doneB", value=True)
        await converged(clients, ["alice"], {"map": (await clients.get("bob"))["map"]},
                        "alice to have bob's writes")
        await agreed(clients, ["alice", "bob"], "alice and bob to agree")
        expected = await yjs_state(yjs, await client_update(clients, "alice"))
        for api in (api_a, api_b):
            assert same_document(await yjs_state(yjs, await api.get_document(room)), expected)
            assert same_document(await yjs_state(
                yjs, await api.get_document(room, format="v2"), v2=True), expected)
            known = base64.b64decode(earlier_state["sv"])
            diff = await api.get_document(room, state_vector=known)
            assert len(diff) < len(await api.get_document(room))
            assert same_document(await yjs_state(
                yjs, diff, base=base64.b64encode(earlier).decode()), expected)
        as_json = await api_a.get_document(room, format="json")
        assert as_json["map"] == json.loads(expected["json"]["map"])
        assert as_json["arr"] == json.loads(expected["json"]["arr"])
        assert as_json["text"] == json.loads(expected["json"]["text"])
        # the key order of a value a client wrote, as yjs prints it (integer keys first)
        assert json.dumps(as_json["map"]["kA"], separators=(",", ":")) == \
            '{"2":"y","10":"x","z":1,"a":[1,1],"nested":{"q":1,"b":2}}'



async def test_versions_and_rollback_for_every_client(
    servers: tuple[ServerProcess, ServerProcess], clients: NodeClients
) -> None:
    a, b = servers
    room = "rollback-room"
    await clients.open("alice", a.url, room)
    await clients.open("bob", b.url, room)
    await clients.synced("alice")
    await clients.synced("bob")
    await clients.call("insertText", name="alice", text="the good text")
    await clients.call("mapSet", name="alice", key="state", value={"good": True, "n": 1})
    await clients.call("mapSetSubmap", name="alice", key="sub", entries={"keep": "me"})
    await clients.call("arrayPush", name="alice", values=["one", "two", "three"])
    good = await agreed(clients, ["alice", "bob"], "bob to have the good document")
    assert good["map"]["sub"] == {"keep": "me"} and len(good["arr"]) == 3
    async with DocumentClient(await b.api_url()) as api:
        async def versions(at_least: int) -> list[Any]:
            found: list[Any] = []

            async def enough() -> bool:
                found[:] = await api.versions(room)
                return len(found) >= at_least

            await wait_until(enough, 20, f"{at_least} version(s) of {room}")
            return found

        good_version = (await versions(1))[0]
        assert good_version.size > 0 and good_version.state_vector
        assert await api.get_version(room, good_version.id, format="json") == {
            "text": good["text"], "map": good["map"], "arr": good["arr"]}
        # bad edits on both servers: deletes, overwrites, a deleted nested map, inserts
        await clients.call("deleteText", name="bob", index=4, length=5)
        await clients.call("insertText", name="bob", index=0, text="BAD ")
        await clients.call("mapSet", name="bob", key="state", value={"good": False})
        await clients.call("mapDelete", name="alice", key="sub")
        await clients.call("mapSet", name="alice", key="extra", value=1)
        await clients.call("arrayDelete", name="alice", index=1, length=1)
        await clients.call("arrayInsert", name="bob", index=0, values=["zero"])
        bad = await agreed(clients, ["alice", "bob"], "both to have the bad document")
        assert bad != good and bad["map"]["state"] == {"good": False}
        await versions(2)  # the bad document was compacted too: the good one is history
        answer = await api.rollback(room, good_version.id)
        assert answer["changed"] and answer["deleted"] > 0 and answer["restored"] > 0
        await converged(clients, ["alice", "bob"], good, "every client back to the version")
        for name, url in (("carol", a.url), ("dave", b.url)):
            await clients.open(name, url, room)
            await clients.synced(name)
            await converged(clients, [name], good, f"{name} (joining) to get the version")
        before = len(await api.versions(room))
        await versions(before + 1)  # the rollback itself was compacted
        await clients.open("erin", b.url, room)
        await clients.synced("erin")
        await converged(clients, ["erin"], good, "a joiner after the next compaction")
        assert await api.get_document(room, format="json") == {
            "text": good["text"], "map": good["map"], "arr": good["arr"]}
        # editing goes on from there, for everyone
        await clients.call("insertText", name="erin", text="!")
        await converged(clients, ["alice", "bob"], {"text": good["text"] + "!"},
                        "an edit after the rollback")
        with pytest.raises(ApiError) as refused:
            await api.rollback(room, "0000000000001-00000000")
        assert refused.value.status == 404


async def test_the_embedded_default_serves_the_api_and_thins_versions(
    tmp_path: Path, clients: NodeClients
) -> None:
    env = {"YSYNC_DATA_DIR": str(tmp_path / "data"), "REDIS_TASK_DEBOUNCE": "200",
           "REDIS_MIN_MESSAGE_LIFETIME": "0", "YSYNC_WORKER_IDLE_WAIT": "0.1",
           "YSYNC_HISTORY_ENABLED": "yes", "YSYNC_HISTORY_KEEP_ALL": "0",
           "YSYNC_HISTORY_KEEP_HOURLY": "86400"}
    async with running_server(env, cwd=tmp_path) as server:
        room = "embedded"
        await clients.open("solo", server.url, room)
        await clients.synced("solo")
        async with DocumentClient(await server.api_url()) as api:
            for i in range(4):
                await clients.call("mapSet", name="solo", key=f"k{i}", value=i)

                async def recorded(count: int = i + 1) -> bool:
                    listed = await api.versions(room)
                    if not listed:
                        return False
                    doc = await api.get_version(room, listed[0].id, format="json")
                    return len(doc["map"]) == count

                await wait_until(recorded, 15, f"a version with {i + 1} keys")
            listed = await api.versions(room)
            # keep_all 0: only the newest version of each hour survives, and the one just made
            hours = {v.time_ms // 3_600_000 for v in listed[1:]}
            assert len(listed) <= 3 and len(hours) == len(listed[1:]), listed
            assert await api.get_document(room, format="json") == {
                "map": {f"k{i}": i for i in range(4)}}


# --- authentication ------------------------------------------------------------------------


class Permissions(PermissionEndpoint):
    """``writer`` may write, ``reader`` only read, ``outsider`` is refused (403)."""

    def access(self, room: str, user: str) -> str | None:
        if user == "outsider":
            self.answer(403, b"no")
            return None
        return "rw" if user == "writer" else "read-only"


@pytest.fixture
def perm_url() -> Iterator[str]:
    with serving_http(Permissions) as base:
        yield base + "/perm"


async def test_auth_refuses_and_writes_nothing(
    redis_url: str, prefix: str, perm_url: str, client: aioredis.Redis
) -> None:
    public, private = generate_keypair()
    secret = "backend-secret-0123456789"
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_API_ENABLED": "yes",
           "AUTH_PUBLIC_KEY": public, "AUTH_PERM_CALLBACK": perm_url,
           "YSYNC_API_SECRET": secret, "YSYNC_API_MAX_BODY_SIZE": "2048"}
    key = load_private_key(private)
    room = "secret room"
    stream = room_stream_key(prefix, room_as_sent(room))
    update = edited(b"\x00\x00", lambda doc: doc.get("map", type=pycrdt.Map).__setitem__(
        "x", 1), 77)
    async with running_server(env) as server:
        url = await server.api_url()

        async def refused(token: str | None, call: str, *args: Any) -> int:
            async with DocumentClient(url, token=token) as api:
                with pytest.raises(ApiError) as caught:
                    await getattr(api, call)(room, *args)
            assert not await client.exists(stream), f"{call} wrote to the stream"
            return caught.value.status

        tokens = {user: mint_token(key, user, 600) for user in ("writer", "reader", "outsider")}
        assert await refused(None, "get_document") == 401
        assert await refused(None, "apply_update", update) == 401
        assert await refused("not.a.token", "get_document") == 401
        assert await refused("wrong-secret", "apply_update", update) == 401
        assert await refused(tokens["reader"], "apply_update", update) == 403
        assert await refused(tokens["reader"], "rollback", "0000000000001-00000000") == 403
        assert await refused(tokens["outsider"], "get_document") == 403
        assert await refused(tokens["writer"], "apply_update", b"\x00" * 4096) == 413
        assert await refused(tokens["writer"], "apply_update", b"\x07\x07\x07") == 400
        async with DocumentClient(url, token=tokens["reader"]) as reader:
            assert await reader.get_document(room) == b"\x00\x00"  # may read
        async with DocumentClient(url, token=tokens["writer"]) as writer:
            assert (await writer.apply_update(room, update))["appended"]
        assert await client.xlen(stream) == 1
        async with DocumentClient(url, token=secret) as backend:
            assert (await backend.get_document(room, format="json")) == {"map": {"x": 1}}
            second = edited(await backend.get_document(room), lambda doc: doc.get(
                "map", type=pycrdt.Map).__setitem__("y", 2), 78)
            assert (await backend.apply_update(room, second))["appended"]
        assert await client.xlen(stream) == 2
