"""A real server at LOG=debug: its whole stderr holds no token and no raw control character.

Tokens travel in the query (``?yauth=``) and the subprotocol (``yauth-<token>``, echoed back),
accepted and refused; the websockets library traces both at debug. Paths and headers with ESC,
CR and NUL arrive on a raw socket, as no client library would send them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from ysync.auth import generate_keypair, load_private_key, mint_token

from conftest import seconds
from harness import PermissionEndpoint, ServerProcess, raw_request, running_server, serving_http

pytestmark = pytest.mark.anyio


@pytest.fixture
def perm_url() -> Iterator[str]:
    with serving_http(PermissionEndpoint) as base:
        yield base + "/perm"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_keypair()


@pytest.fixture
async def server(redis_url: str, prefix: str, perm_url: str,
                 keys: tuple[str, str]) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "LOG": "debug", "AUTH_PUBLIC_KEY": keys[0],
           "AUTH_PERM_CALLBACK": perm_url, "YSYNC_AUTH_PERM_TIMEOUT": "5"}
    async with running_server(env) as srv:
        yield srv


def token_for(private_key: str, user: str) -> str:
    return mint_token(load_private_key(private_key), user, 600)





def upgrade(path: bytes, *extra_headers: bytes) -> bytes:
    return b"\r\n".join([
        b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Upgrade: websocket",
        b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13", *extra_headers, b"", b""])


async def test_no_token_and_no_raw_control_character_in_debug_logs(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    good_query, good_sub = token_for(keys[1], "alice"), token_for(keys[1], "bob")
    stranger = generate_keypair()[1]
    bad_query, bad_sub = token_for(stranger, "mallory"), token_for(stranger, "eve")
    garbage = "not-a-jwt-but-secret-4f1d2c"
    secrets = [good_query, good_sub, bad_query, bad_sub, garbage]

    async with connect(f"{server.url}/room?yauth={good_query}",
                       open_timeout=seconds(10)) as ws:
        await asyncio.wait_for(ws.recv(), seconds(10))  # the server's sync step 1
    protocol = Subprotocol(f"yauth-{good_sub}")
    async with connect(f"{server.url}/room", subprotocols=[protocol],
                       open_timeout=seconds(10)) as ws:
        assert ws.subprotocol == protocol  # echoed in the response, which debug logs too
        await asyncio.wait_for(ws.recv(), seconds(10))
    for url, protocols in [(f"{server.url}/room?yauth={bad_query}", None),
                           (f"{server.url}/room", [Subprotocol(f"yauth-{bad_sub}")]),
                           (f"{server.url}/room", [Subprotocol(f"yauth-{garbage}")])]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=protocols, open_timeout=seconds(10)):
                pass
        assert refused.value.response.status_code == 401

    # a path with ESC (an ANSI colour), CR and NUL, and a token after it (refused: 401)
    answer = await raw_request(server.port, upgrade(
        b"/esc\x1b[31mred\rforged_line\x00nul?yauth=" + bad_query.encode()))
    assert answer.startswith(b"HTTP/1.1 401")
    # requests websockets refuses itself; at debug it traces the raw line in the exception:
    # a header with ESC, and a request line broken by a space (its token in the message)
    await raw_request(server.port, upgrade(b"/room", b"X-Note: a\x1b[2Jb\x00c"))
    await raw_request(server.port, upgrade(b"/sp ace\x1b?yauth=" + good_query.encode()))
    await raw_request(server.port, upgrade(b"/%1b%0d%00"))  # encoded: refused, harmless

    await server.stop()
    text = server.log_text()
    for secret in secrets:
        assert secret not in text
        assert secret.rsplit(".", 1)[-1] not in text  # not even the signature alone
    for raw in ("\x1b", "\r", "\x00"):
        assert raw not in text, f"{raw!r} logged raw"
    # the lines are there, escaped and redacted: the test saw what it meant to check
    assert "yauth=[redacted]" in text
    assert "yauth-[redacted]" in text
    assert "refused /esc\\x1b[31mred\\rforged_line\\x00nul" in text
    assert "a\\x1b[2Jb\\x00c" in text
