"""One client connection: what it may do, and a send path that never blocks the sender.

Every message for a client is handed over as a ready WebSocket frame (:func:`websocket_frame`;
server frames are unmasked, so one frame serves every client of a room). While the client keeps
up, the frame is written straight to its socket, with no task switch; once its socket pushes
back, frames wait in a bounded queue that the connection's writer task drains. A client whose
backlog exceeds ``server.send_buffer_limit`` cannot keep up and is disconnected (1013) instead
of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ysync.auth import Grant, current_time_ms
from ysync.metrics import Metrics

log = logging.getLogger(__name__)

#: Frames larger than this go through websockets as fragments of this size, so that a socket's
#: write buffer holds at most about one fragment of a large document per client.
FRAGMENT_SIZE = 256 * 1024

#: WebSocket close code for a client that does not read fast enough (RFC 6455 "try again later").
CLOSE_SLOW_CLIENT = 1013


def websocket_frame(message: bytes) -> bytes:
    """A final, unmasked binary WebSocket frame carrying ``message`` (RFC 6455 section 5.2)."""
    size = len(message)
    if size < 126:
        return bytes((0x82, size)) + message
    if size < 1 << 16:
        return bytes((0x82, 126)) + size.to_bytes(2, "big") + message
    return bytes((0x82, 127)) + size.to_bytes(8, "big") + message


def frame_payload(frame: bytes) -> memoryview:
    """The message inside a frame made by :func:`websocket_frame`."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return memoryview(frame)[start:]


class Connection:
    """A client of one room. :meth:`deliver` sends or queues; :meth:`write_loop` drains."""

    __slots__ = ("_busy", "_close_with", "_closing", "_direct", "_in_flight", "_limit",
                 "_metrics", "_queue",
                 "_queued_bytes", "_ready", "awareness_clock", "awareness_id", "closed", "grant",
                 "opened_ms", "ws")

    def __init__(self, ws: ServerConnection, grant: Grant, *, send_buffer_limit: int,
                 metrics: Metrics | None = None, opened_ms: int | None = None) -> None:
        self.ws = ws
        self.grant = grant  # replaced when a permission re-check changes the access
        #: when the upgrade request arrived (ms since the epoch): kicks after it end this
        self.opened_ms = current_time_ms() if opened_ms is None else opened_ms
        self.awareness_id: int | None = None
        self.awareness_clock = 0
        self.closed = asyncio.Event()  # set when the writer has ended
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._limit = send_buffer_limit
        self._ready = asyncio.Event()
        self._busy = False  # the writer is sending a frame (fragments must not be interleaved)
        self._in_flight = 0  # size of that frame
        self._closing = False
        self._close_with: tuple[int, str] | None = None
        self._metrics = metrics
        # frames can be written as they are unless an extension (compression) transforms them
        self._direct = not ws.protocol.extensions

    @property
    def room(self) -> str:
        return self.grant.room

    @property
    def user_id(self) -> str:
        return self.grant.user_id

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

    def deliver(self, frame: bytes) -> None:
        """Send one frame (from :func:`websocket_frame`) now if the socket takes it, else queue
        it. Never blocks."""
        if self._closing:
            return
        ws = self.ws
        if (self._direct and not self._queue and not self._busy and not ws.paused
                and len(frame) <= FRAGMENT_SIZE and ws.protocol.state is State.OPEN):
            if not ws.transport.is_closing():
                ws.transport.write(frame)
            return
        backlog = self._queued_bytes + self._in_flight + ws.transport.get_write_buffer_size()
        if (self._queue or self._busy) and backlog + len(frame) > self._limit:
            log.warning("room %s: client too slow (%d bytes waiting), disconnecting",
                        self.room, backlog)
            self.close(CLOSE_SLOW_CLIENT, "client too slow")
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._ready.set()

    def close(self, code: int, reason: str, *, after: bytes | None = None) -> None:
        """Stop sending and let the writer close the WebSocket (the handler then ends).

        ``after``: one last frame sent before the close frame (e.g. permission denied).
        """
        if self._closing:
            return
        self._closing = True
        if self._metrics is not None:
            self._metrics.closed.labels(reason).inc()
        self._queue.clear()
        self._queued_bytes = 0
        if after is not None:
            self._queue.append(after)
        self._close_with = (code, reason)
        self._ready.set()

    async def write_loop(self) -> None:
        """Send queued frames, waiting for the socket to drain, until the connection closes."""
        ws = self.ws
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    frame = self._queue.popleft()
                    self._queued_bytes -= len(frame)
                    self._busy = True
                    self._in_flight = len(frame)
                    try:
                        if self._direct and len(frame) <= FRAGMENT_SIZE:
                            await ws.drain()
                            if ws.protocol.state is not State.OPEN or ws.transport.is_closing():
                                return
                            ws.transport.write(frame)
                        elif len(frame) <= FRAGMENT_SIZE:
                            await ws.send(bytes(frame_payload(frame)))
                        else:
                            await ws.send(_fragments(frame_payload(frame)))
                    finally:
                        self._busy = False
                        self._in_flight = 0
                if self._close_with is not None:
                    await ws.close(*self._close_with)
                    return
        except ConnectionClosed:
            return
        finally:
            self.closed.set()


def _fragments(payload: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(payload), FRAGMENT_SIZE):
        yield payload[start:start + FRAGMENT_SIZE]
