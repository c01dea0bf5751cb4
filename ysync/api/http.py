"""A small bounded HTTP/1.1 server for the document API: :func:`serve_http`.

Why not the WebSocket server's port: websockets' server parses only the GET request of a
WebSocket handshake (no request bodies), so a POST of an update cannot reach it. Why h11: it is a
sans-I/O HTTP/1.1 parser and serializer (python-hyper; the core of httpcore, hence already
installed with httpx, and of uvicorn's and hypercorn's h11 modes), kept up and strict about the
protocol (request smuggling through conflicting lengths, bad chunking, oversized heads are its
errors), with no event loop or lifecycle of its own. This module is the thin anyio loop around
it, in the shape of websockets' own sans-I/O core: bytes in, events out, bytes to send. A
framework (Starlette on uvicorn, aiohttp) would bring a second server lifecycle, its own
signal handling and logging into ``ysync serve`` for four routes.

Bounded everything: at most ``max_connections`` open connections (the next is answered 503 and
closed), a request head of at most 16 KiB (431), a body of at most ``max_body_size`` bytes (413,
checked against Content-Length before reading, and while reading a chunked body), a whole request
within ``request_timeout`` seconds (408), an idle keep-alive connection closed after
``idle_timeout``. There is no rate limit: put one in the load balancer (docs/api.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute

from ysync.logs import safe

log = logging.getLogger(__name__)

#: Longest request line plus headers, in bytes (a token of auth.token_max_length fits).
MAX_HEAD_BYTES = 16 * 1024
_READ_SIZE = 64 * 1024
#: After a refusal: how long, and how many bytes, the rest of the request is read and dropped.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request: ``path`` and ``query`` as sent (not decoded), header names lower
    case, the whole body."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256
    max_body_size: int = 32 * 1024 * 1024
    request_timeout: float = 30.0
    idle_timeout: float = 10.0


def error_response(status: int, message: str) -> Response:
    """A JSON error answer ``{"error": message}``."""
    import json

    return Response(status, json.dumps({"error": message}).encode() + b"\n")


class _Refused(Exception):
    """The request cannot be served: answer ``response`` and close."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Closed(Exception):
    """The client went away (or was idle too long): close without an answer."""


async def serve_http(handler: Handler, host: str, port: int, limits: Limits, *,
                     reuse_port: bool = False,
                     task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled; ``task_status`` gets the bound port
    once it listens (``port`` 0 picks a free one)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                               reuse_port=reuse_port)
    slots = anyio.Semaphore(limits.max_connections)

    async def connection(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                await _refuse_busy(stream)
                return
            try:
                await _serve_connection(stream, handler, limits)
            finally:
                slots.release()

    async with listener:
        task_status.started(int(listener.extra(SocketAttribute.local_port)))
        await listener.serve(connection)


async def _refuse_busy(stream: anyio.abc.SocketStream) -> None:
    # answered before the request is read (the client may see the answer, or a reset)
    body = b'{"error": "too many connections"}\n'
    head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    with anyio.move_on_after(1):
        try:
            await stream.send(head + body)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


async def _serve_connection(stream: anyio.abc.SocketStream, handler: Handler,
                            limits: Limits) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    while True:
        try:
            request = await _read_request(stream, conn, limits)
        except _Closed:
            return
        except _Refused as refused:
            if await _try_send(stream, conn, refused.response, close=True):
                await _linger(stream)
            return
        try:
            response = await handler(request)
        except Exception:
            # a bug must not take the API down: log it whole, answer 500
            log.exception("document API: %s %s failed", request.method, safe(request.path[:200]))
            response = error_response(500, "internal error")
        keep_alive = conn.their_state is h11.DONE
        if not await _try_send(stream, conn, response, close=not keep_alive):
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _linger(stream: anyio.abc.SocketStream) -> None:
    """Close gracefully after refusing a request whose rest is still arriving: stop sending,
    then read and drop what comes for a moment, so that the client reads the answer before the
    connection ends (closing with unread data makes the kernel reset it, answer lost)."""
    with anyio.move_on_after(_LINGER_SECONDS):
        try:
            await stream.send_eof()
            dropped = 0
            while dropped < _LINGER_BYTES:
                dropped += len(await stream.receive(_READ_SIZE))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            return


async def _receive(stream: anyio.abc.SocketStream, conn: h11.Connection) -> None:
    try:
        data = await stream.receive(_READ_SIZE)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        data = b""
    conn.receive_data(data)


async def _next_event(stream: anyio.abc.SocketStream, conn: h11.Connection) -> h11.Event:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            # h11's hint: 400, or 431 for a head above MAX_HEAD_BYTES
            raise _Refused(error_response(exc.error_status_hint, f"bad request: {exc}")) \
                from exc
        if event is h11.NEED_DATA:
            await _receive(stream, conn)
            continue
        if event is h11.PAUSED:
            raise _Closed()
        assert isinstance(event, h11.Event)
        return event


async def _read_request(stream: anyio.abc.SocketStream, conn: h11.Connection,
                        limits: Limits) -> Request:
    first: h11.Event | None = None
    with anyio.move_on_after(limits.idle_timeout):  # the head, on a new or idle connection
        first = await _next_event(stream, conn)
    if first is None or isinstance(first, h11.ConnectionClosed):
        raise _Closed()
    if not isinstance(first, h11.Request):
        raise _Refused(error_response(400, "bad request"))
    # h11 bounds a head that arrives in pieces; one that arrived whole is measured here
    if len(first.target) + sum(len(n) + len(v) + 4 for n, v in first.headers) > MAX_HEAD_BYTES:
        raise _Refused(error_response(431, f"the request head is larger than {MAX_HEAD_BYTES} "
                                           "bytes"))
    body = bytearray()
    with anyio.move_on_after(limits.request_timeout) as scope:
        length = _content_length(first)
        if length is not None and length > limits.max_body_size:
            raise _Refused(error_response(413, f"the body is larger than "
                                               f"{limits.max_body_size} bytes"))
        if conn.they_are_waiting_for_100_continue:
            await _write(stream, conn.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[])))
        while True:
            event = await _next_event(stream, conn)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body_size:
                    raise _Refused(error_response(413, f"the body is larger than "
                                                       f"{limits.max_body_size} bytes"))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed()
    if scope.cancelled_caught:
        raise _Refused(error_response(408, "the request did not arrive in time"))
    target = first.target.decode("ascii", errors="replace")
    path, _, query = target.partition("?")
    headers = [(name.decode("latin-1").lower(), value.decode("latin-1"))
               for name, value in first.headers]
    return Request(first.method.decode("ascii", errors="replace").upper(), path, query,
                   headers, bytes(body))


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _write(stream: anyio.abc.SocketStream, data: bytes | None) -> None:
    if data:
        await stream.send(data)


async def _send(stream: anyio.abc.SocketStream, conn: h11.Connection, response: Response,
                *, close: bool) -> None:
    headers = [("content-type", response.content_type),
               ("content-length", str(len(response.body))),
               ("cache-control", "no-store"),
               ("x-content-type-options", "nosniff"),
               *response.headers]
    if close:
        headers.append(("connection", "close"))
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    await _write(stream, conn.send(h11.Response(status_code=response.status, headers=headers,
                                                reason=reason)))
    if response.body:
        await _write(stream, conn.send(h11.Data(data=response.body)))
    await _write(stream, conn.send(h11.EndOfMessage()))


async def _try_send(stream: anyio.abc.SocketStream, conn: h11.Connection, response: Response,
                    *, close: bool) -> bool:
    """Send ``response``; False if the connection cannot carry it (the client is gone, or
    the protocol state allows no answer)."""
    if conn.our_state is not h11.SEND_RESPONSE and conn.their_state is not h11.ERROR:
        return False  # (after a request h11 refused, it lets the server answer it)
    try:
        await _send(stream, conn, response, close=close)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError,
            h11.LocalProtocolError):
        return False
    return True


__all__ = ["Handler", "Limits", "Request", "Response", "error_response", "serve_http"]
