"""A handshake that websockets refuses after the server admitted the request leaves nothing
behind (found by the soak investigation, docs/soak.md: each one used to keep its whole
connection alive for ever)."""

from __future__ import annotations

import gc

import anyio
import pytest

from ysync.config import ServerConfig
from ysync.server import run_server

from harness import raw_request
from storage_fixtures import make_config

pytestmark = [pytest.mark.anyio]

#: An upgrade the gate admits (auth is off) but websockets refuses: no Sec-WebSocket-Key.
BAD_UPGRADE = (b"GET /room HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def test_refused_handshakes_are_not_kept(redis_url: str, prefix: str) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix)
    config = type(config)(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                             "server": ServerConfig(port=0, drain_period=0)})
    async with run_server(config) as running:
        for _ in range(50):
            answer = await raw_request(running.port, BAD_UPGRADE)
            assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        with anyio.fail_after(10):
            while True:
                gc.collect()
                if len(running.handler._grants) == 0:
                    break
                await anyio.sleep(0.05)  # the last connections are still closing
