"""ysync.auth.check_permission and authorize against a real permission server on port 0."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from ysync.auth import (
    Access,
    RoomNameError,
    authorize,
    check_permission,
    generate_keypair,
    load_private_key,
    load_public_key,
    mint_token,
)
from ysync.errors import AuthError

from conftest import seconds

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PermissionServer:
    """A callback whose answer depends on the user id; records every raw request path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.release = threading.Event()  # lets the "slow" handler finish at teardown
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.paths.append(self.path)
                room, _, user = self.path.removeprefix("/perm/").partition("/")
                if user == "slow":
                    outer.release.wait(seconds(30))
                    return
                if user == "boom":
                    self.answer(500, b'{"yroom":"r","yaccess":"rw","yuserid":"boom"}')
                elif user == "html":
                    self.answer(200, b"<html>not json</html>", "text/html")
                elif user == "nofield":
                    self.answer(200, json.dumps({"yroom": room, "yuserid": user}).encode())
                elif user == "list":
                    self.answer(200, b'["rw"]')
                elif user == "big":
                    self.answer(200, json.dumps({"yaccess": "rw", "pad": "x" * 100_000}).encode())
                elif user == "renamed":
                    self.answer(200, b'{"yroom":"r","yaccess":"rw","yuserid":"someone-else"}')
                elif user == "moved":
                    self.send_response(307)
                    self.send_header("Location", f"/perm/{room}/writer")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    access = {"writer": "rw", "reader": "r"}.get(user, "none")
                    body = {"yroom": room, "yaccess": access, "yuserid": user}
                    self.answer(200, json.dumps(body).encode())

            def answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/perm"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(seconds(10))


@pytest.fixture
def perm_server() -> Iterator[PermissionServer]:
    server = PermissionServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


TIMEOUT = seconds(5)


async def test_rw_grants_write(perm_server: PermissionServer, client: httpx.AsyncClient) -> None:
    access = await check_permission(client, perm_server.url, "room", "writer", TIMEOUT)
    assert access == Access(can_write=True, user_id="writer")
    assert perm_server.paths == ["/perm/room/writer"]


async def test_r_is_read_only(perm_server: PermissionServer, client: httpx.AsyncClient) -> None:
    access = await check_permission(client, perm_server.url, "room", "reader", TIMEOUT)
    assert access == Access(can_write=False, user_id="reader")


async def test_anything_else_is_read_only(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    access = await check_permission(client, perm_server.url, "room", "nobody", TIMEOUT)
    assert access.can_write is False


async def test_room_travels_undecoded(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    room = "compat%20late%20%C3%A9"
    await check_permission(client, perm_server.url + "/", room, "writer", TIMEOUT)
    await check_permission(client, perm_server.url, "a|b^c[d]", "a b", TIMEOUT)
    assert perm_server.paths == [f"/perm/{room}/writer", "/perm/a|b^c[d]/a%20b"]


async def test_answer_renames_the_user(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    access = await check_permission(client, perm_server.url, "room", "renamed", TIMEOUT)
    assert access == Access(can_write=True, user_id="someone-else")


async def test_redirect_is_followed(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    access = await check_permission(client, perm_server.url, "room", "moved", TIMEOUT)
    assert access == Access(can_write=True, user_id="writer")


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("boom", "permission check answered HTTP 500"),
        ("html", "invalid permission answer"),
        ("nofield", "invalid permission answer"),
        ("list", "invalid permission answer"),
        ("big", "invalid permission answer"),
    ],
)
async def test_bad_answers(
    perm_server: PermissionServer, client: httpx.AsyncClient, user: str, reason: str
) -> None:
    with pytest.raises(AuthError) as info:
        await check_permission(client, perm_server.url, "room", user, TIMEOUT)
    assert info.value.reason == reason


async def test_slow_callback_times_out(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    timeout = seconds(0.3)
    started = time.monotonic()
    with pytest.raises(AuthError) as info:
        await check_permission(client, perm_server.url, "room", "slow", timeout)
    assert info.value.reason == "permission check timed out"
    assert time.monotonic() - started < timeout + seconds(5)


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/perm"
        with pytest.raises(AuthError) as info:
            await check_permission(client, url, "room", "writer", TIMEOUT)
    assert info.value.reason == "permission check failed"
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_bad_room_never_reaches_the_callback(
    perm_server: PermissionServer, client: httpx.AsyncClient
) -> None:
    for room in ("..", "a/b", "%2e%2e"):
        with pytest.raises(RoomNameError):
            await check_permission(client, perm_server.url, room, "writer", TIMEOUT)
    assert perm_server.paths == []


# authorize: the whole check of one upgrade


async def test_authorize(perm_server: PermissionServer, client: httpx.AsyncClient) -> None:
    public, private = generate_keypair()
    public_key = load_public_key(public)
    token = mint_token(load_private_key(private), "writer", 60)

    grant = await authorize(
        room_segment="my%20room", subprotocols=[f"yauth-{token}"], query="",
        public_key=public_key, client=client, callback_url=perm_server.url,
        permission_timeout=TIMEOUT,
    )
    assert (grant.room, grant.user_id, grant.can_write) == ("my%20room", "writer", True)
    assert grant.subprotocol == f"yauth-{token}"
    assert grant.exp_ms is not None

    reader = mint_token(load_private_key(private), "reader", 60)
    grant = await authorize(
        room_segment="r", subprotocols=[], query=f"yauth={reader}", public_key=public_key,
        client=client, callback_url=perm_server.url, permission_timeout=TIMEOUT,
    )
    assert (grant.user_id, grant.can_write, grant.subprotocol) == ("reader", False, None)
    assert perm_server.paths == ["/perm/my%20room/writer", "/perm/r/reader"]


async def test_authorize_refuses(perm_server: PermissionServer, client: httpx.AsyncClient) -> None:
    public, private = generate_keypair()
    token = mint_token(load_private_key(private), "writer", 1, now_ms=1000)

    async def attempt(room: str, subprotocols: list[str], query: str, now_ms: int | None) -> None:
        await authorize(room_segment=room, subprotocols=subprotocols, query=query,
                        public_key=load_public_key(public), client=client,
                        callback_url=perm_server.url, permission_timeout=TIMEOUT, now_ms=now_ms)

    with pytest.raises(AuthError, match="missing token"):
        await attempt("r", ["other"], "", None)
    with pytest.raises(AuthError, match="token expired"):
        await attempt("r", [], f"yauth={token}", None)
    with pytest.raises(RoomNameError):
        await attempt("..", [], f"yauth={token}", 1000)
    assert perm_server.paths == []
