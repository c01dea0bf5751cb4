"""``ysync-worker --metrics-port``: ``GET /metrics`` (Prometheus) and ``GET /healthz``.

A deliberately small HTTP/1.1 server on asyncio streams: one request per connection, a request
head of at most :data:`MAX_HEAD` bytes read within :data:`READ_TIMEOUT` seconds, at most
:data:`MAX_CLIENTS` connections at once (more wait in the listen backlog). ``/healthz`` is 200
while Redis answers the worker, ``/livez`` while the process answers (for a liveness probe);
``/metrics`` shows the worker's
counters and its view of the queue (:class:`ysync.metrics.WorkerMetrics`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger(__name__)

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
MAX_CLIENTS = 32

#: (status, content type, body)
Answer = tuple[int, str, bytes]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class WorkerHttp:
    """Answers ``/metrics`` with ``render()`` and ``/healthz`` with ``healthy()`` (a coroutine
    returning ``None`` when healthy, else what is wrong)."""

    def __init__(self, render: Callable[[], bytes], content_type: str,
                 healthy: Callable[[], Awaitable[str | None]]) -> None:
        self._render = render
        self._content_type = content_type
        self._healthy = healthy
        self._slots = asyncio.Semaphore(MAX_CLIENTS)
        self.port = 0

    async def serve(self, host: str, port: int, *, task_status: anyio.abc.TaskStatus[int]
                    = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started`` gets the bound port."""
        server = await asyncio.start_server(self._client, host, port, limit=MAX_HEAD)
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("worker metrics on http://%s:%d/metrics", host, self.port)
        try:
            async with server:
                task_status.started(self.port)
                await server.serve_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            try:
                answer = await self._answer(reader)
                await self._send(writer, answer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("metrics client: %s", type(exc).__name__)
            finally:
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> Answer:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            return 400, "text/plain", b"request head too large\n"
        method, _, rest = head.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET\n"
        if target == b"/metrics":
            return 200, self._content_type, self._render()
        if target == b"/livez":
            return 200, "text/plain", b"alive\n"
        if target == b"/healthz":
            problem = await self._healthy()
            if problem is None:
                return 200, "text/plain", b"ok\n"
            return 503, "text/plain", f"{problem}\n".encode()
        return 404, "text/plain", b"not found: /metrics, /healthz and /livez\n"

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, answer: Answer) -> None:
        status, content_type, body = answer
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
