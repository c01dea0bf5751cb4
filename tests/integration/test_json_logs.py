"""``log.format = json``: a real server's stderr is JSON lines only, with the connection's fields.

At ``LOG=debug`` (the websockets library's handshake and frame traces included), with tokens in
the query and paths with control characters, every line of stderr must parse as one JSON object
holding no token and no raw control character; and the lines about a connection (here, the
protocol error that closes it) carry its ``room``, ``connection`` and ``user``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ysync.auth import generate_keypair, load_private_key, mint_token

from conftest import seconds
from harness import PermissionEndpoint, ServerProcess, raw_request, running_server, serving_http

pytestmark = pytest.mark.anyio

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def perm_url() -> Iterator[str]:
    with serving_http(PermissionEndpoint) as base:
        yield base + "/perm"


@pytest.fixture
async def server(redis_url: str, prefix: str,
                 perm_url: str) -> AsyncIterator[tuple[ServerProcess, str]]:
    public, private = generate_keypair()
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "LOG": "debug", "YSYNC_LOG_FORMAT": "json",
           "AUTH_PUBLIC_KEY": public, "AUTH_PERM_CALLBACK": perm_url}
    async with running_server(env) as srv:
        yield srv, private





def parsed(server: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.stderr_lines:
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
        assert isinstance(lines[-1], dict), line
    return lines


async def test_stderr_is_json_lines_and_connection_lines_carry_the_room(
    server: tuple[ServerProcess, str]
) -> None:
    srv, private = server
    token = mint_token(load_private_key(private), "alice", 600)
    async with connect(f"{srv.url}/json-room?yauth={token}", open_timeout=seconds(10)) as ws:
        await asyncio.wait_for(ws.recv(), seconds(10))  # the server's sync step 1
        await ws.send(b"\x00\x02\x03\x05\x01\x02")  # well framed, but not a Yjs update
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), seconds(10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
    answer = await raw_request(srv.port, b"\r\n".join([
        b"GET /esc\x1b[31mred\rforged\x00?yauth=" + token.encode() + b" HTTP/1.1",
        b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13", b"", b""]))
    assert answer.startswith(b"HTTP/1.1 401")
    await srv.stop()

    lines = parsed(srv)
    assert lines, "the server wrote nothing on stderr"
    text = "\n".join(srv.stderr_lines)
    assert token.rsplit(".", 1)[-1] not in text
    for raw in ("\x1b", "\r", "\x00"):
        assert raw not in text, f"{raw!r} logged raw"
    for line in lines:
        assert TIME.match(line["time"]), line
        assert line["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert isinstance(line["logger"], str) and isinstance(line["message"], str), line
    # the lines the test meant to produce are there, redacted and escaped
    assert any("yauth=[redacted]" in line["message"] for line in lines)
    assert any("refused /esc\\x1b[31mred\\rforged\\x00" in line["message"] for line in lines)

    [error] = [line for line in lines
               if "closing connection after a protocol error" in line["message"]]
    assert error["level"] == "warning"
    assert error.get("room") == "json-room", (
        "the connection's lines carry no room: ysync/server.py's connection handler must set "
        f"the log context (ysync.logs.set_log_context): {error}")
    assert error.get("user") == "alice"
    assert re.fullmatch(r"[0-9a-f]{8}", error.get("connection", "")), error
    # every line about this connection names the same one
    ours = [line for line in lines if line.get("room") == "json-room"]
    assert {line["connection"] for line in ours} == {error["connection"]}
