"""The document API's HTTP server (ysync/api/http.py) on real loopback sockets: requests and
keep-alive, and every bound: body size, head size, request time, connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest

from ysync.api.http import Limits, Request, Response, serve_http

from conftest import seconds

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a bug")
    body = f"{request.method} {request.path} ?{request.query} {len(request.body)}".encode()
    return Response(200, body, "text/plain")


@asynccontextmanager
async def serving(**limits: float) -> AsyncIterator[int]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, echo, "127.0.0.1", 0,
                                      Limits(**limits)))  # type: ignore[arg-type]
        yield port
        tg.cancel_scope.cancel()


async def exchange(port: int, data: bytes, *, wait: float = 5) -> bytes:
    """Send ``data``, read until the server closes (or ``wait`` seconds pass)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        out = b""
        with anyio.move_on_after(seconds(wait)):
            while True:
                try:
                    out += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        return out


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with serving(idle_timeout=0.5) as port:
        answer = await exchange(port, get("/a?x=1") + get("/b", "Connection: close\r\n"))
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert b"GET /a ?x=1 0" in answer and b"GET /b ? 0" in answer


async def test_a_body_is_read_whole() -> None:
    body = b"x" * 100_000
    async with serving() as port:
        answer = await exchange(port, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                                b"Connection: close\r\n\r\n" + body)
    assert b"200 OK" in answer and b"POST /u ? 100000" in answer


async def test_a_declared_body_above_the_limit_is_refused_unread() -> None:
    async with serving(max_body_size=1024) as port:
        answer = await exchange(port, b"POST /u HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 5000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_a_chunked_body_above_the_limit_is_refused() -> None:
    chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
    async with serving(max_body_size=2048) as port:
        answer = await exchange(port, b"POST /u HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_expect_100_continue_is_answered() -> None:
    async with serving() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                              b"Expect: 100-continue\r\n\r\n")
            with anyio.fail_after(seconds(5)):
                interim = await stream.receive()
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send(b"abc")
            with anyio.fail_after(seconds(5)):
                final = await stream.receive()
    assert b"200 OK" in final and b"POST /u ? 3" in final


async def test_a_head_too_large_is_refused() -> None:
    async with serving() as port:
        answer = await exchange(port, get("/h", f"X-Big: {'a' * 20_000}\r\n"))
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_slow_body_times_out() -> None:
    async with serving(request_timeout=0.3) as port:
        answer = await exchange(port, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                                b"\r\nabc")
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_connection_is_closed_without_an_answer() -> None:
    async with serving(idle_timeout=0.2) as port:
        answer = await exchange(port, b"", wait=3)
    assert answer == b""


async def test_garbage_is_a_bad_request() -> None:
    async with serving() as port:
        answer = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_failing_handler_answers_500_and_the_server_goes_on() -> None:
    async with serving() as port:
        assert (await exchange(port, get("/boom", "Connection: close\r\n"))).startswith(
            b"HTTP/1.1 500 ")
        assert b"200 OK" in await exchange(port, get("/fine", "Connection: close\r\n"))


async def test_connections_above_the_limit_get_503() -> None:
    async with serving(max_connections=1, idle_timeout=5) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as held:
            await held.send(get("/held"))  # served, then kept alive (and counted)
            with anyio.fail_after(seconds(5)):
                assert b"200 OK" in await held.receive()
            answer = await exchange(port, get("/second"), wait=3)
            assert answer.startswith(b"HTTP/1.1 503 ")
        # the held connection closed: its slot is free again
        with anyio.fail_after(seconds(5)):
            while True:
                answer = await exchange(port, get("/third", "Connection: close\r\n"))
                if b"200 OK" in answer:
                    break
                await anyio.sleep(0.05)
