"""Who may open which room: the checks made on the HTTP upgrade request.

A :data:`Gate` takes the request's path, query and headers and returns a :class:`Grant` or
raises :class:`~ysync.errors.AuthError` (answered with HTTP 401). With no authentication
configured every request is granted write access (and a warning is logged at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from websockets.datastructures import Headers

from ysync.config import Config
from ysync.errors import AuthError

log = logging.getLogger(__name__)

#: Longest room name accepted (the raw, still percent-encoded path segment).
MAX_ROOM_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Grant:
    """Access granted to one connection. ``room`` is the path segment exactly as it arrived."""

    room: str
    can_write: bool
    user_id: str | None = None
    subprotocol: str | None = None


Gate = Callable[[str, str, Headers], Awaitable[Grant]]


def room_from_path(path: str) -> str:
    """The room of a request path ``/<room>``, undecoded as y-redis uses it (spec section 1).

    Raises AuthError for paths that are not exactly one sensible segment.
    """
    if not path.startswith("/") or len(path) < 2:
        raise AuthError("no room in the path")
    room = path[1:]
    if len(room) > MAX_ROOM_LENGTH:
        raise AuthError("room name too long")
    if "/" in room or room in (".", ".."):
        raise AuthError("invalid room name")
    lowered = room.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or lowered in ("%2e", "%2e%2e",
                                                                             ".%2e", "%2e."):
        raise AuthError("invalid room name")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in room):
        raise AuthError("invalid room name")
    return room


async def allow_everyone(path: str, query: str, headers: Headers) -> Grant:
    """The gate of a server without authentication: everyone may read and write."""
    return Grant(room_from_path(path), can_write=True)


@asynccontextmanager
async def open_gate(config: Config) -> AsyncIterator[Gate]:
    """The gate the configuration asks for."""
    if not config.auth.public_key:
        log.warning("authentication is OFF: anyone who can reach this server may read and write "
                    "every document (set AUTH_PUBLIC_KEY and AUTH_PERM_CALLBACK to require tokens)")
        yield allow_everyone
        return
    raise AuthError("token authentication is not wired in yet")  # replaced by the auth issue
