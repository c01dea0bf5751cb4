"""Drivers for integration tests: ysync server processes and real Node y-websocket clients."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from conftest import seconds

REPO = Path(__file__).resolve().parents[1]


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str,
                     interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``within`` (scaled) seconds."""
    deadline = asyncio.get_running_loop().time() + seconds(within)
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {seconds(within):.1f}s waiting for {what}")
        await asyncio.sleep(interval)


class ServerProcess:
    """``python -m ysync serve`` in a subprocess; ``url`` once it printed its ready line.

    It listens on a free port, or on ``port`` (a server started again where its clients
    reconnect: y-websocket reconnects to the URL it was given).
    """

    def __init__(self, env: Mapping[str, str], args: list[str] | None = None,
                 cwd: Path | None = None, *, port: int = 0) -> None:
        # a test that stops a server with clients connected does not wait for the drain
        # (clients closed with 1012 over server.drain_period) unless it asks for one; the
        # document API (on by default when embedded) takes a free port, not 3003, unless asked
        self._env = {"YSYNC_SERVER_DRAIN_PERIOD": "0", "YSYNC_API_PORT": "0", **os.environ,
                     **env}
        self._args = args or []
        self._port = port
        self._cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.port = 0
        self.stderr_lines: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self) -> ServerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ysync", "serve", "--port", str(self._port), *self._args,
            env=self._env, cwd=self._cwd or REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        self._stderr_task = asyncio.create_task(self._read_stderr())
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), seconds(60))
        except TimeoutError:
            await self.kill()
            raise AssertionError("server did not start:\n" + "\n".join(self.stderr_lines)) from None
        text = line.decode().strip()
        if not text.startswith("ysync ready on "):
            await self.stop()
            raise AssertionError(f"server did not start ({text!r}):\n"
                                 + "\n".join(self.stderr_lines))
        # "ysync ready on ws://host:port", "... (N processes)" from a supervisor
        self.url = text.removeprefix("ysync ready on ").split(" ", 1)[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr_lines.append(line)
            if os.environ.get("YSYNC_TEST_SHOW_SERVER_LOG"):
                print(f"[server {self.port}] {line}", file=sys.stderr)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), seconds(30))
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._stderr_task is not None:
            await asyncio.wait_for(self._stderr_task, seconds(5))
        return code

    async def kill(self) -> int:
        return await self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return "\n".join(self.stderr_lines)

    async def api_url(self, within: float = 10) -> str:
        """``http://host:port`` of the server's document API, from its log line."""
        found: list[str] = []

        async def logged() -> bool:
            for line in self.stderr_lines:
                match = re.search(r"document API listening on (http://[^/\s]+)", line)
                if match:
                    found.append(match.group(1))
                    return True
            return False

        await wait_until(logged, within, "the document API's log line")
        return found[0]


class PermissionEndpoint(BaseHTTPRequestHandler):
    """A permission callback (``GET /perm/<room>/<user>``) answering read-write for everyone;
    tests subclass it and override :meth:`access` (or ``do_GET``) for other answers."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _, _, room, user = self.path.split("?", 1)[0].split("/", 3)
        how = self.access(room, user)
        if how is not None:
            self.grant(room, user, how)

    def access(self, room: str, user: str) -> str | None:
        """``"rw"``/``"read-only"`` to grant, or None once :meth:`answer` was called."""
        return "rw"

    def grant(self, room: str, user: str, how: str) -> None:
        body = json.dumps({"yroom": room, "yaccess": how, "yuserid": user}).encode()
        self.answer(200, body)

    def answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except BrokenPipeError:
            return  # the server gave up waiting: nothing left to answer

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def serving_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` answered by ``handler`` in a thread, until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def running_server(env: Mapping[str, str], args: list[str] | None = None,
                         cwd: Path | None = None) -> AsyncIterator[ServerProcess]:
    server = await ServerProcess(env, args, cwd).start()
    try:
        yield server
    finally:
        await server.stop()


class NodeDriver:
    """A Node script that takes one JSON command per line on stdin and answers one JSON line
    per command on stdout (``{"id", "ok", "result"|"error"}``); lines with ``"event"`` are
    unsolicited and collected in :attr:`events`. Its stderr is kept (last lines) for messages.
    """

    def __init__(self, node_dir: Path, script: str, env: Mapping[str, str] | None = None,
                 exit_within: float = 10) -> None:
        self._node_dir = node_dir
        self._script = script
        self._env = {**os.environ, **(env or {})}
        self._exit_within = exit_within
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=200)

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            "node", str(self._node_dir / self._script), cwd=self._node_dir, env=self._env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._read_stderr())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()  # the script cleans up and exits
        try:
            await asyncio.wait_for(self._proc.wait(), seconds(self._exit_within))
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            message = json.loads(raw)
            if "event" in message:
                message["received_at"] = time.monotonic()  # when this process read it
                self.events.append(message)
                continue
            future = self._waiting.pop(message["id"], None)
            if future is None or future.done():
                continue
            if message["ok"]:
                future.set_result(message["result"])
            else:
                future.set_exception(AssertionError(f"{self._script}: {message['error']}"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(AssertionError(
                    f"{self._script} ended:\n" + "\n".join(self.stderr_lines)))

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    async def call(self, op: str, *, wait: float = 30, **args: Any) -> Any:
        """Run ``op`` in the Node process; ``wait`` bounds the answer (scaled seconds)."""
        assert self._proc is not None and self._proc.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self._proc.stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        await self._proc.stdin.drain()
        return await asyncio.wait_for(future, seconds(wait))


class NodeClients(NodeDriver):
    """One Node process hosting many named y-websocket clients (tests/node/client.mjs)."""

    def __init__(self, node_dir: Path) -> None:
        super().__init__(node_dir, "client.mjs")

    async def open(self, name: str, url: str, room: str, **options: Any) -> Any:
        return await self.call("open", name=name, url=url, room=room, **options)

    async def synced(self, name: str, within: float = 15) -> None:
        await self.call("waitSynced", name=name, timeout=int(seconds(within) * 1000),
                        wait=within + 5)

    async def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("get", name=name)
        return result

    def closes(self, name: str) -> list[int | None]:
        return [e["code"] for e in self.events if e["event"] == "close" and e["name"] == name]


async def raw_request(port: int, request: bytes) -> bytes:
    """Send ``request`` as it is and read the answer until the server closes the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), seconds(10))
    finally:
        writer.close()
        await writer.wait_closed()


def _http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=seconds(5)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def http_get(url: str) -> tuple[int, str]:
    """``GET url``: (status, body), from a thread; an error status is an answer, not raised."""
    return await asyncio.to_thread(_http_get, url)


# --- documents written by client.mjs's burst: the items, and whether clients hold them --


def items_of(names: Iterable[str], tag: str, count: int) -> list[str]:
    """What :func:`burst` of each of ``names`` with ``tag`` writes."""
    return [f"{name}.{tag}.{i}" for name in names for i in range(count)]


async def burst(clients: NodeClients, name: str, tag: str, count: int, pace_ms: int) -> None:
    """``name`` writes the items ``<name>.<tag>.<i>``, ``pace_ms`` apart (client.mjs ``burst``:
    each in the map, the array and the text)."""
    await clients.call("burst", name=name, tag=f"{name}.{tag}.", count=count, interval=pace_ms,
                       wait=30 + count * pace_ms / 1000)


def holds_all(state: dict[str, Any], items: list[str]) -> bool:
    """The document holds each item once in the map, the array and the text, and nothing else."""
    pieces = re.findall(r"\[([^\[\]]*)\]", state["text"])
    return (state["map"] == {item: int(item.rsplit(".", 1)[1]) for item in items}
            and sorted(state["arr"]) == sorted(items) and sorted(pieces) == sorted(items)
            and len(state["text"]) == sum(len(item) + 2 for item in items))


async def converged(clients: NodeClients, names: list[str], items: list[str]) -> bool:
    """Every client of ``names`` holds every item, and their documents are the same."""
    states = [await clients.get(name) for name in names]
    return all(holds_all(state, items) and state == states[0] for state in states)
