"""Authentication end to end: real y-websocket clients, a real permission endpoint, real Redis."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ysync.auth import generate_keypair, load_private_key, mint_token

from conftest import seconds
from harness import (
    NodeClients,
    PermissionEndpoint,
    ServerProcess,
    running_server,
    serving_http,
    wait_until,
)
from jwt_forge import b64, b64json, es384, sign_ecdsa

pytestmark = [pytest.mark.anyio, pytest.mark.node]


class Permissions(PermissionEndpoint):
    """Behaviour per user, changeable while the test runs."""

    behaviour: dict[str, str] = {}
    asked: list[str] = []

    def access(self, room: str, user: str) -> str | None:
        self.asked.append(self.path)
        how = self.behaviour.get(user, "rw")
        if how == "slow":
            time.sleep(3)
            how = "rw"
        if how == "500":
            self.answer(500, b"boom")
        elif how == "403":
            self.answer(403, b"no")
        elif how == "nonjson":
            self.answer(200, b"<html>")
        else:
            return how
        return None


@pytest.fixture
def perm_url() -> Iterator[str]:
    Permissions.behaviour = {}
    Permissions.asked = []
    with serving_http(Permissions) as base:
        yield base + "/perm"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_keypair()


def token_for(keys: tuple[str, str], user: str, ttl: float = 600) -> str:
    return mint_token(load_private_key(keys[1]), user, ttl)


@pytest.fixture
async def server(redis_url: str, prefix: str, perm_url: str,
                 keys: tuple[str, str]) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "AUTH_PUBLIC_KEY": keys[0],
           "AUTH_PERM_CALLBACK": perm_url, "YSYNC_AUTH_PERM_TIMEOUT": "1",
           "YSYNC_AUTH_RECHECK_INTERVAL": "1", "YSYNC_AUTH_TOKEN_MAX_LENGTH": "4096"}
    async with running_server(env) as srv:
        yield srv


async def stream_keys(redis_url: str, prefix: str) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [k async for k in client.scan_iter(match=f"{prefix}:room:*")]
    finally:
        await client.aclose()


async def test_token_in_subprotocol_or_query_syncs(
    server: ServerProcess, clients: NodeClients, keys: tuple[str, str]
) -> None:
    await clients.open("sub", server.url, "authed", protocols=[f"yauth-{token_for(keys, 'u1')}"])
    await clients.open("query", server.url, "authed", params={"yauth": token_for(keys, "u2")})
    await clients.synced("sub")
    await clients.synced("query")
    await clients.call("insertText", name="sub", text="from sub")

    async def query_has_it() -> bool:
        return (await clients.get("query"))["text"] == "from sub"

    await wait_until(query_has_it, 10, "the query-token client to receive the update")
    assert any(p.endswith("/authed/u1") for p in Permissions.asked)


async def test_subprotocol_is_echoed(server: ServerProcess, keys: tuple[str, str]) -> None:
    protocol = f"yauth-{token_for(keys, 'u1')}"
    async with connect(f"{server.url}/echo", subprotocols=[protocol],  # type: ignore[list-item]
                       open_timeout=seconds(10)) as ws:
        assert ws.subprotocol == protocol


async def test_read_only_client_receives_but_cannot_write(
    server: ServerProcess, clients: NodeClients, keys: tuple[str, str], redis_url: str,
    prefix: str,
) -> None:
    Permissions.behaviour["viewer"] = "r"
    await clients.open("viewer", server.url, "ro", params={"yauth": token_for(keys, "viewer")},
                       awareness={"name": "viewer"})
    await clients.synced("viewer")
    await clients.call("insertText", name="viewer", text="should not spread")
    await clients.open("editor", server.url, "ro", params={"yauth": token_for(keys, "editor")})
    await clients.synced("editor")
    await clients.call("mapSet", name="editor", key="by", value="editor")

    async def viewer_has_it() -> bool:
        return (await clients.get("viewer"))["map"] == {"by": "editor"}

    await wait_until(viewer_has_it, 10, "the viewer to receive the editor's update")
    assert (await clients.get("editor"))["text"] == ""
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange(f"{prefix}:room:ro:index")
    finally:
        await client.aclose()
    assert all(b"should not spread" not in f[b"m"] for _i, f in entries)
    assert all(b"viewer" not in f[b"m"] for _i, f in entries), "read-only awareness stays local"


@pytest.mark.slow
async def test_lone_read_only_client_stays_connected_for_a_minute(
    server: ServerProcess, clients: NodeClients, keys: tuple[str, str]
) -> None:
    Permissions.behaviour["lonely"] = "r"
    await clients.open("lonely", server.url, "alone", params={"yauth": token_for(keys, "lonely")},
                       awareness={"name": "lonely"})
    await clients.synced("lonely")
    await asyncio.sleep(seconds(62))  # y-websocket gives up on a silent server after 30 s
    info = await clients.call("info", name="lonely")
    assert info["connected"] and clients.closes("lonely") == [], info


async def test_revoked_client_is_closed_for_good(
    server: ServerProcess, clients: NodeClients, keys: tuple[str, str]
) -> None:
    await clients.open("doomed", server.url, "revoke", params={"yauth": token_for(keys, "doomed")})
    await clients.synced("doomed")
    Permissions.behaviour["doomed"] = "403"

    async def closed() -> bool:
        return bool(clients.closes("doomed"))

    await wait_until(closed, 5, "the revoked client to be closed within the re-check interval")
    assert clients.closes("doomed") == [4403]
    await asyncio.sleep(seconds(1.5))
    info = await clients.call("info", name="doomed")
    assert not info["shouldConnect"] and clients.closes("doomed") == [4403], "no reconnect loop"


async def test_permission_outage_does_not_kick_open_connections(
    server: ServerProcess, clients: NodeClients, keys: tuple[str, str]
) -> None:
    await clients.open("steady", server.url, "outage", params={"yauth": token_for(keys, "st")})
    await clients.synced("steady")
    Permissions.behaviour["st"] = "500"
    await wait_until(lambda: _asked_again("/outage/st"), 5, "a re-check during the outage")
    await asyncio.sleep(seconds(1.5))
    assert clients.closes("steady") == []


async def _asked_again(path_end: str) -> bool:
    return sum(p.endswith(path_end) for p in Permissions.asked) >= 3


async def test_kick_reaches_every_process(
    redis_url: str, prefix: str, perm_url: str, keys: tuple[str, str], clients: NodeClients
) -> None:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "AUTH_PUBLIC_KEY": keys[0], "AUTH_PERM_CALLBACK": perm_url}
    async with running_server(env) as a, running_server(env) as b:
        await clients.open("a1", a.url, "kick me", params={"yauth": token_for(keys, "mallory")})
        await clients.open("b1", b.url, "kick me", params={"yauth": token_for(keys, "mallory")})
        await clients.open("b2", b.url, "kick me", params={"yauth": token_for(keys, "alice")})
        for name in ("a1", "b1", "b2"):
            await clients.synced(name)
        kick = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ysync", "kick", "kick me", "--user", "mallory",
            "--redis", redis_url, "--prefix", prefix, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(kick.communicate(), seconds(20))
        assert kick.returncode == 0 and b"2 ysync processes" in out

        async def both_closed() -> bool:
            return clients.closes("a1") == [4403] and clients.closes("b1") == [4403]

        await wait_until(both_closed, 5, "mallory's connections on both servers to close")
        assert clients.closes("b2") == []


def forged_tokens(keys: tuple[str, str]) -> dict[str, str]:
    key = load_private_key(keys[1])
    other = load_private_key(generate_keypair()[1])
    now = int(time.time() * 1000)
    good = {"iat": now, "exp": now + 600_000, "yuserid": "u1"}
    header, payload, signature = token_for(keys, "u1").split(".")
    p256 = ec.generate_private_key(ec.SECP256R1())
    return {
        "garbage": "not-a-token",
        "tampered payload": f"{header}.{b64json({**good, 'yuserid': 'admin'})}.{signature}",
        "another key": es384(other, good),
        "ES256 on P-256": sign_ecdsa({"alg": "ES256", "typ": "JWT"},
                                     json.dumps(good).encode(), p256, hashes.SHA256()),
        "alg none": f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(good)}.",
        "expired": es384(key, {**good, "exp": now - 1000}),
        "missing yuserid": es384(key, {"iat": now, "exp": now + 600_000}),
        "oversized": es384(key, {**good, "pad": "x" * 5000}),
        "empty signature": f"{header}.{payload}.{b64(b'')}",
    }


async def test_security_refusals_answer_401_and_write_nothing(
    server: ServerProcess, keys: tuple[str, str], redis_url: str, prefix: str
) -> None:
    cases: list[tuple[str, str, list[str]]] = [("missing token", "/room", [])]
    for what, token in forged_tokens(keys).items():
        cases.append((what, f"/room?yauth={token}", []))
        cases.append((what + " (subprotocol)", "/room", [f"yauth-{token}"]))
    good = token_for(keys, "u1")
    for user, how in [("down500", "500"), ("nonjson", "nonjson"), ("slowpoke", "slow"),
                      ("denied", "403")]:
        Permissions.behaviour[user] = how
        cases.append((f"permission {how}", f"/room?yauth={token_for(keys, user)}", []))
    for path in ["/..", "/%2e%2e", "/a%2fb", "/a%5cb", "/%00", "/a/b", "/" + "r" * 300]:
        cases.append((f"room {path[:12]}", f"{path}?yauth={good}", []))
    for what, path, protocols in cases:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{server.url}{path}", open_timeout=seconds(10),
                               subprotocols=protocols or None):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 401, what
        assert good not in info.value.response.body.decode(errors="replace")
    assert await stream_keys(redis_url, prefix) == []
    assert good[20:60] not in server.log_text(), "tokens never reach the log"


async def test_permission_endpoint_down(redis_url: str, prefix: str,
                                        keys: tuple[str, str]) -> None:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "AUTH_PUBLIC_KEY": keys[0],
           "AUTH_PERM_CALLBACK": "http://127.0.0.1:9/perm"}
    async with running_server(env) as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{srv.url}/room?yauth={token_for(keys, 'u')}",
                               open_timeout=seconds(10)):
                pass
        assert info.value.response.status_code == 401
    assert await stream_keys(redis_url, prefix) == []


async def test_cli_token_is_accepted_by_lib0(node_dir: Path, keys: tuple[str, str]) -> None:
    with anyio.fail_after(seconds(60)):
        minted = (await anyio.run_process(
            [sys.executable, "-m", "ysync", "token", "--user", "cli-user", "--ttl", "60"],
            env={"AUTH_PRIVATE_KEY": keys[1], "PATH": "/usr/bin:/bin"},
        )).stdout.decode().strip()
        verified = await anyio.run_process(
            ["node", str(node_dir / "auth_lib0.mjs"), "verify"], cwd=node_dir,
            input=json.dumps({"publicJwk": keys[0], "token": minted}).encode(),
        )
    answer = json.loads(verified.stdout)
    assert answer["ok"] and answer["payload"]["yuserid"] == "cli-user"
