#!/usr/bin/env python3
"""An example permission server for ysync and y-redis (AUTH_PERM_CALLBACK), for development.

It answers as y-redis's bin/auth-server-example.js does:

  GET /auth/perm/<room>/<userid>  ->  {"yroom": <room>, "yaccess": "rw", "yuserid": <userid>}
      "r" for --read-only-users; HTTP 403 (not JSON) for --deny-users, which makes both ysync
      and y-redis refuse the connection. <room> and <userid> are echoed as they arrived.
  GET /auth/token[?yuserid=<id>]  ->  a token (text) for <id> (default user1), valid for
      --token-ttl seconds; only when AUTH_PRIVATE_KEY is set (needs the ysync package).
  PUT /ydoc/<room>                ->  200; logs the size of the document a worker sent
      (YDOC_UPDATE_CALLBACK=http://<host>:<port>/ydoc).

Point the server at it with AUTH_PERM_CALLBACK=http://<host>:<port>/auth/perm. The server asks
only after it has verified the client's token, so the user id can be trusted; this example
grants every room to every user not listed. Do not expose it: /auth/token mints a token for
anybody who asks. Only the Python standard library is needed unless AUTH_PRIVATE_KEY is set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, unquote, urlsplit

PERM_PREFIX = "/auth/perm/"
YDOC_PREFIX = "/ydoc/"
MAX_YDOC_BYTES = 256 * 1024 * 1024
Minter = Callable[[str], str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="perm_server.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n  python scripts/perm_server.py --port 5173 --read-only-users bob "
            "--deny-users eve\n  AUTH_PERM_CALLBACK=http://127.0.0.1:5173/auth/perm ysync"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=5173,
                        help="TCP port (default 5173, as y-redis's example; 0 picks a free one)")
    parser.add_argument("--read-only-users", default="", metavar="A,B",
                        help="comma-separated user ids answered with yaccess 'r'")
    parser.add_argument("--deny-users", default="", metavar="C,D",
                        help="comma-separated user ids answered with HTTP 403")
    parser.add_argument("--token-ttl", type=float, default=3600.0, metavar="SECONDS",
                        help="lifetime of tokens from /auth/token (default 3600)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser.parse_args(argv)


def user_set(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def load_minter(ttl_seconds: float) -> Minter | None:
    """A token minter from AUTH_PRIVATE_KEY, or None when it is not set."""
    private_jwk = os.environ.get("AUTH_PRIVATE_KEY", "")
    if not private_jwk:
        return None
    if importlib.util.find_spec("ysync") is None:  # run from a checkout without installing
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from ysync.auth import load_private_key, mint_token
        from ysync.errors import ConfigError
    except ImportError as exc:
        raise SystemExit(f"perm_server: AUTH_PRIVATE_KEY is set but minting tokens needs ysync "
                         f"and its dependencies (run with the project's venv): {exc}") from exc
    try:
        key = load_private_key(private_jwk)
    except ConfigError as exc:
        raise SystemExit(f"perm_server: {exc}") from exc
    return lambda user_id: mint_token(key, user_id, ttl_seconds, issuer="ysync-perm-server")


def make_handler(
    read_only: frozenset[str], denied: frozenset[str], minter: Minter | None, quiet: bool
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ysync-perm-server"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            if not quiet:
                super().log_message(format, *args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path, _, query = self.path.partition("?")
            if path.startswith(PERM_PREFIX):
                self.permission(path.removeprefix(PERM_PREFIX))
            elif path == "/auth/token":
                self.token(query)
            else:
                self.reply(404, b"not found\n", "text/plain")

        def do_PUT(self) -> None:  # noqa: N802 - http.server's name
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            if not path.startswith(YDOC_PREFIX) or not 0 < length <= MAX_YDOC_BYTES:
                self.close_connection = True
                self.reply(404 if not path.startswith(YDOC_PREFIX) else 400, b"", "text/plain")
                return
            self.rfile.read(length)
            self.log_message("ydoc update for room %r: %d bytes", path[len(YDOC_PREFIX):], length)
            self.reply(200, b"", "text/plain")

        def permission(self, rest: str) -> None:
            room, slash, user_id = rest.partition("/")
            if not room or not slash or not user_id or "/" in user_id:
                self.reply(404, b"expected /auth/perm/<room>/<userid>\n", "text/plain")
                return
            name = unquote(user_id)
            if name in denied:
                # not JSON: y-redis refuses too (its res.json() throws), ysync refuses non-2xx
                self.reply(403, b"forbidden\n", "text/plain")
                return
            access = "r" if name in read_only else "rw"
            body = {"yroom": room, "yaccess": access, "yuserid": user_id}
            self.reply(200, json.dumps(body).encode(), "application/json")

        def token(self, query: str) -> None:
            if minter is None:
                self.reply(404, b"AUTH_PRIVATE_KEY is not set\n", "text/plain")
                return
            user_id = dict(parse_qsl(query)).get("yuserid") or "user1"
            self.reply(200, minter(user_id).encode(), "text/plain")

        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    minter = load_minter(args.token_ttl)
    handler = make_handler(user_set(args.read_only_users), user_set(args.deny_users), minter,
                           args.quiet)
    class Server(ThreadingHTTPServer):
        # http.server's backlog of 5 drops connections when a crowd of clients connects at
        # once (every upgrade asks this endpoint), costing each dropped one a 1 s SYN retry
        request_queue_size = 1024

    try:
        server = Server((args.host, args.port), handler)
    except OSError as exc:
        print(f"perm_server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    server.daemon_threads = True
    host, port = args.host, server.server_port
    print(f"perm_server listening on http://{host}:{port} "
          f"(AUTH_PERM_CALLBACK=http://{host}:{port}/auth/perm)", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return: call it from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
