"""The longest room the upgrade accepts opens, is written, compacted to files and read back."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect

from ysync.protocol import SyncStep2, decode_message, encode_sync_step1, encode_sync_update
from ysync.storage.filesystem import folder_name

from conftest import seconds
from harness import running_server, wait_until

pytestmark = pytest.mark.anyio

#: Client 1's ``map.set('key', 'value')`` (docs/protocol.md), as a v1 update.
UPDATE = bytes.fromhex("010101002801036d6170036b657901770576616c756500")


async def test_a_room_too_long_for_a_file_name_works_end_to_end(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    room = ":" * 256  # accepted (256 bytes); 768 bytes as encodeURIComponent writes it
    storage = tmp_path / "storage"
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
           "YSYNC_STORAGE_PATH": str(storage), "YSYNC_WORKER_ENABLED": "yes",
           "REDIS_TASK_DEBOUNCE": "200", "REDIS_MIN_MESSAGE_LIFETIME": "200"}
    async with running_server(env) as srv:

        async def document() -> bytes:
            async with connect(f"{srv.url}/{room}", open_timeout=seconds(10)) as ws:
                await ws.send(encode_sync_step1(b"\x00"))
                with anyio.fail_after(seconds(10)):
                    while True:
                        message = decode_message(await ws.recv())  # type: ignore[arg-type]
                        if isinstance(message, SyncStep2):
                            return message.update

        async with connect(f"{srv.url}/{room}", open_timeout=seconds(10)) as writer:
            await writer.send(encode_sync_update(UPDATE))
            await writer.send(encode_sync_step1(b"\x00"))  # answered after the append
            with anyio.fail_after(seconds(10)):
                while not isinstance(decode_message(await writer.recv()),  # type: ignore[arg-type]
                                     SyncStep2):
                    pass
            assert writer.close_code is None
        snapshots = storage / folder_name(room) / "index"
        assert len(folder_name(room)) <= 255

        async def compacted() -> bool:
            return snapshots.is_dir() and any(not p.name.startswith(".")
                                              for p in snapshots.iterdir())

        await wait_until(compacted, 15, "the worker to persist the long room's snapshot")
        assert b"value" in await document()
    assert "storage unavailable" not in srv.log_text()
    assert "name too long" not in srv.log_text().lower()
