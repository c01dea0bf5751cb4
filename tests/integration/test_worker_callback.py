"""The update callback (YDOC_UPDATE_CALLBACK): what it sends, and that failures never block."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis.asyncio as aioredis

from workers.callback import callback_url, send_update
from workers.compactor import Worker
from ysync.storage.memory import MemoryStorage
from ysync.streams import room_stream_key

from storage_fixtures import append_updates, doc_json_of_v2, edit_doc, make_config

pytestmark = pytest.mark.anyio


@dataclass
class Received:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class CallbackServer:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def callback_server() -> Iterator[CallbackServer]:
    state = CallbackServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(Received("PUT", self.path, self.headers["Content-Type"], body))
            time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/ydoc"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def form_fields(received: Received) -> dict[str, tuple[str | None, str, bytes]]:
    """name -> (filename, content type, bytes) of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {received.content_type}\r\n\r\n".encode() + received.body)
    out = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = (part.get_filename(), part.get_content_type(),
                          part.get_payload(decode=True))
    return out


def test_callback_url_is_built_as_y_redis_builds_it() -> None:
    assert callback_url("http://h/ydoc", "room") == "http://h/ydoc/room"
    assert callback_url("http://h/ydoc/", "room") == "http://h/ydoc/room"
    assert callback_url("http://h/ydoc", "my room é") == "http://h/ydoc/my%20room%20%C3%A9"
    # a room as it arrived in the WebSocket path (already percent-encoded) is kept as is
    assert callback_url("http://h/ydoc", "my%20room") == "http://h/ydoc/my%20room"
    assert callback_url("http://h/ydoc", "a?b#c") == "http://h/ydoc/a%3Fb%23c"


async def test_worker_puts_the_whole_doc_before_persisting(
    callback_server: CallbackServer, redis_url: str, prefix: str, client: aioredis.Redis
) -> None:
    config = make_config(redis_url=redis_url, prefix=prefix, update_callback=callback_server.url)
    storage = MemoryStorage()
    updates, expected = edit_doc(client_id=70)
    await append_updates(client, prefix, room_stream_key(prefix, "my room"), updates)
    assert await Worker(client, storage, config).process_due_tasks() == 1
    [received] = callback_server.requests
    assert received.method == "PUT" and received.path == "/ydoc/my%20room"
    assert received.content_type.startswith("multipart/form-data; boundary=")
    fields = form_fields(received)
    assert list(fields) == ["ydoc"]
    filename, content_type, body = fields["ydoc"]
    assert (filename, content_type) == ("blob", "application/octet-stream")
    stored = await storage.retrieve_doc("my room", "index")
    assert stored is not None and body == stored.update_v2  # v2, the persisted snapshot
    assert doc_json_of_v2(body) == expected
    # nothing changed: no callback
    assert await Worker(client, storage, config).process_due_tasks() == 1
    assert len(callback_server.requests) == 1


@pytest.mark.parametrize("failure", ["status", "timeout", "refused"])
async def test_a_failing_callback_does_not_block_persistence(
    failure: str, callback_server: CallbackServer, redis_url: str, prefix: str,
    client: aioredis.Redis
) -> None:
    url = callback_server.url
    if failure == "status":
        callback_server.status = 500
    elif failure == "timeout":
        callback_server.delay = 2.0
    else:
        url = "http://127.0.0.1:1/ydoc"
    config = make_config(redis_url=redis_url, prefix=prefix, update_callback=url,
                         callback_timeout=0.3)
    storage = MemoryStorage()
    updates, expected = edit_doc(client_id=71)
    await append_updates(client, prefix, room_stream_key(prefix, "r"), updates)
    worker = Worker(client, storage, config)
    assert await worker.process_due_tasks() == 1
    assert worker.failures == 0
    stored = await storage.retrieve_doc("r", "index")
    assert stored is not None and doc_json_of_v2(stored.update_v2) == expected


async def test_send_update_reports_success(callback_server: CallbackServer) -> None:
    assert await send_update(callback_server.url, "r", b"\x00", call_timeout=5)
    callback_server.status = 404
    assert not await send_update(callback_server.url, "r", b"\x00", call_timeout=5)
