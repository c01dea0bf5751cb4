"""One client connection: its bounded send queue and what it is allowed to do.

Messages for a client are queued without blocking (the stream reader must never wait for one
slow socket) and written by the connection's own writer task. A queue above its byte limit means
the client cannot keep up: it is disconnected instead of growing the server's memory.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ysync.auth import Grant
from ysync.metrics import Metrics

log = logging.getLogger(__name__)

#: Messages larger than this are sent as fragments of this size, so that the socket's write
#: buffer holds at most one fragment of a large document per client.
FRAGMENT_SIZE = 256 * 1024

#: WebSocket close code for a client that does not read fast enough (RFC 6455 "try again later").
CLOSE_SLOW_CLIENT = 1013


class Connection:
    """A client of one room. ``deliver`` queues; :meth:`write_loop` sends."""

    def __init__(self, ws: ServerConnection, grant: Grant, *, send_buffer_limit: int,
                 metrics: Metrics | None = None) -> None:
        self.ws = ws
        self.grant = grant  # replaced when a permission re-check changes the access
        self.awareness_id: int | None = None
        self.awareness_clock = 0
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._limit = send_buffer_limit
        self._ready = anyio.Event()
        self._closing = False
        self._close_with: tuple[int, str] | None = None
        self._metrics = metrics
        self.closed = anyio.Event()  # set when the writer has ended

    @property
    def room(self) -> str:
        return self.grant.room

    @property
    def can_write(self) -> bool:
        return self.grant.can_write

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def closing(self) -> bool:
        """True once the server decided to close this connection."""
        return self._closing

    def deliver(self, message: bytes) -> None:
        """Queue one encoded message (one WebSocket frame). Never blocks."""
        if self._closing:
            return
        if self._queue and self._queued_bytes + len(message) > self._limit:
            log.warning("room %s: client too slow (%d bytes queued), disconnecting",
                        self.room, self._queued_bytes)
            self.close(CLOSE_SLOW_CLIENT, "client too slow")
            return
        self._queue.append(message)
        self._queued_bytes += len(message)
        self._ready.set()

    def close(self, code: int, reason: str, *, after: bytes | None = None) -> None:
        """Stop queueing and let the writer close the WebSocket (the handler then ends).

        ``after``: one last message sent before the close frame (e.g. permission denied).
        """
        if self._closing:
            return
        self._closing = True
        if self._metrics is not None:
            self._metrics.closed.labels(reason).inc()
        self._queue.clear()
        if after is not None:
            self._queue.append(after)
        self._queued_bytes = 0
        self._close_with = (code, reason)
        self._ready.set()

    async def write_loop(self) -> None:
        """Send queued messages until the connection closes."""
        try:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                while self._queue:
                    message = self._queue.popleft()
                    self._queued_bytes -= len(message)
                    if len(message) > FRAGMENT_SIZE:
                        await self.ws.send(_fragments(message))
                    else:
                        await self.ws.send(message)
                if self._close_with is not None:
                    await self.ws.close(*self._close_with)
                    return
        except ConnectionClosed:
            return
        finally:
            self.closed.set()


def _fragments(message: bytes) -> Iterator[memoryview]:
    view = memoryview(message)
    for start in range(0, len(view), FRAGMENT_SIZE):
        yield view[start:start + FRAGMENT_SIZE]
