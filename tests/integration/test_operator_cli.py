"""Operator commands against the embedded default: doc show, redis clean, kick."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from conftest import seconds
from harness import NodeClients, ServerProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.node]


async def ysync(*args: str, data_dir: Path, check: bool = True) -> tuple[int, str]:
    env = {"YSYNC_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    with anyio.fail_after(seconds(60)):
        done = await anyio.run_process([sys.executable, "-m", "ysync", *args], env=env,
                                       check=check)
    return done.returncode, done.stdout.decode()


async def test_doc_show_redis_clean_and_kick_on_the_embedded_default(
    tmp_path: Path, node_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    server = await ServerProcess({"YSYNC_DATA_DIR": str(data_dir)}).start()
    try:
        async with NodeClients(node_dir) as clients:
            await clients.open("w", server.url, "ops room")
            await clients.synced("w")
            await clients.call("mapSet", name="w", key="shown", value=[1, "two"])
            await clients.call("insertText", name="w", text="visible")

            async def shown() -> bool:
                _code, out = await ysync("doc", "show", "ops%20room", data_dir=data_dir)
                return bool(json.loads(out) == {"map": {"shown": [1, "two"]},
                                                "text": "visible"})

            await wait_until(shown, 10, "`ysync doc show` to print the running server's doc")

            _code, out = await ysync("kick", "ops room", data_dir=data_dir)
            assert "kick sent to 1 ysync processes" in out

            async def kicked() -> bool:
                return clients.closes("w") == [4403]

            await wait_until(kicked, 5, "the kicked client to be closed with 4403")
    finally:
        assert await server.stop() == 0
    # no server running: the command starts the embedded Redis for itself
    _code, out = await ysync("doc", "show", "ops room", data_dir=data_dir)
    assert json.loads(out)["text"] == "visible"
    code, out = await ysync("redis", "clean", "--prefix", "y", "--yes", data_dir=data_dir)
    assert code == 0 and "deleted" in out
    code, out = await ysync("kick", "ops room", data_dir=data_dir, check=False)
    assert code == 2
