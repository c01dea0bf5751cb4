"""Joining: answers carry only what a client lacks, and simultaneous joiners share one load."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ysync.protocol import (
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_sync_step1,
    encode_sync_update,
)

from conftest import seconds
from harness import ServerProcess, running_server

pytestmark = [pytest.mark.anyio]


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no"}
    async with running_server(env) as srv:
        yield srv


def text_doc(client_id: int, text: str) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["text"] = pycrdt.Text(text)
    return doc


async def step2_for(ws: ClientConnection, state_vector: bytes) -> bytes:
    """Send sync step 1; return the update of the server's sync step 2 (skipping the rest)."""
    await ws.send(encode_sync_step1(state_vector))
    while True:
        raw = await asyncio.wait_for(ws.recv(), seconds(30))
        assert isinstance(raw, bytes)
        message = decode_message(raw)
        if isinstance(message, SyncStep2):
            return message.update


async def first_step1(ws: ClientConnection) -> bytes:
    raw = await asyncio.wait_for(ws.recv(), seconds(30))
    assert isinstance(raw, bytes)
    message = decode_message(raw)
    assert isinstance(message, SyncStep1), message
    return message.state_vector


async def test_step2_carries_only_what_the_client_lacks(server: ServerProcess) -> None:
    writer_doc = text_doc(7, "a" * 50_000)
    first_half = writer_doc.get_update()
    writer_doc["text"] += "b" * 50_000
    room = f"{server.url}/diff"
    async with connect(room, max_size=None) as writer:
        await first_step1(writer)
        await writer.send(encode_sync_update(writer_doc.get_update()))
        await step2_for(writer, writer_doc.get_state())  # once answered, the update is stored

    partial: pycrdt.Doc[Any] = pycrdt.Doc()
    partial.apply_update(first_half)
    async with connect(room, max_size=None) as reader:
        server_sv = await first_step1(reader)
        assert server_sv == writer_doc.get_state()
        missing = await step2_for(reader, partial.get_state())
    partial.apply_update(missing)
    assert str(partial.get("text", type=pycrdt.Text)) == "a" * 50_000 + "b" * 50_000
    assert 50_000 < len(missing) < 60_000, "only the second half is sent"

    async with connect(room, max_size=None) as fresh:
        await first_step1(fresh)
        everything = await step2_for(fresh, b"\x00")
    assert len(everything) > 100_000


async def doc_loads(server: ServerProcess) -> float:
    async with httpx.AsyncClient(timeout=seconds(5)) as http:
        text = (await http.get(server.url.replace("ws://", "http://") + "/metrics")).text
    match = re.search(r"^ysync_doc_loads_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


async def test_simultaneous_joiners_share_one_load(server: ServerProcess) -> None:
    doc = text_doc(9, "x" * 2_000_000)
    room = f"{server.url}/herd"
    async with connect(room, max_size=None) as writer:
        await first_step1(writer)
        await writer.send(encode_sync_update(doc.get_update()))
        await step2_for(writer, doc.get_state())
    before = await doc_loads(server)

    async def join() -> int:
        async with connect(room, max_size=None) as ws:
            return len(await step2_for(ws, b"\x00"))

    sizes = await asyncio.gather(*(join() for _ in range(30)))
    assert len(set(sizes)) == 1 and sizes[0] > 2_000_000
    loads = await doc_loads(server) - before
    assert 1 <= loads <= 5, f"30 simultaneous joiners caused {loads} document loads"


async def test_a_client_that_does_not_read_is_cut_off(redis_url: str, prefix: str) -> None:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_SERVER_SEND_BUFFER_LIMIT": "65536"}
    total = 100 * 100_000
    async with running_server(env) as srv:
        room = f"{srv.url}/slow"
        tiny = socket.socket()  # a small receive buffer: the kernel cannot hide the backlog
        tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        tiny.connect(("127.0.0.1", srv.port))
        tiny.setblocking(False)
        async with connect(room, max_size=None, max_queue=1, sock=tiny) as stuck, \
                connect(room, max_size=None) as fast, connect(room, max_size=None) as writer:
            received: dict[str, int] = {"fast": 0, "writer": 0}

            async def read(name: str, ws: ClientConnection) -> None:
                while received[name] < total:
                    message = decode_message(await ws.recv())  # type: ignore[arg-type]
                    if isinstance(message, SyncUpdate):
                        received[name] += message.update.count(b"z")

            with anyio.fail_after(seconds(60)):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read, "fast", fast)
                    tg.start_soon(read, "writer", writer)
                    doc = text_doc(11, "")
                    for _ in range(100):  # 100 x 100 KB through the room; `stuck` never reads
                        before = doc.get_state()
                        doc["text"] += "z" * 100_000
                        await writer.send(encode_sync_update(doc.get_update(before)))
                        await asyncio.sleep(0.01)  # about one update per stream read
            # (update bytes other than the text may also be "z": count at least)
            assert min(received.values()) >= total, "the clients that read get everything"
            async with httpx.AsyncClient(timeout=seconds(5)) as http:
                text = (await http.get(srv.url.replace("ws://", "http://") + "/metrics")).text
            assert 'reason="client too slow"} 1.0' in text, "exactly the stuck client was cut"
            del stuck
