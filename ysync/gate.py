"""Who may open which room: the checks made on the HTTP upgrade request, and re-checks.

A :class:`Gate` takes the request's path, query and headers and returns a
:class:`~ysync.auth.Grant` or raises :class:`~ysync.errors.AuthError` (answered with HTTP 401).
With no authentication configured every request is granted write access (and a warning is
logged at start-up). With ``AUTH_PUBLIC_KEY`` and ``AUTH_PERM_CALLBACK`` set, a y-redis JWT and
the permission callback decide (:mod:`ysync.auth`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from websockets.datastructures import Headers

from ysync.auth import (
    DEFAULT_MAX_ROOM_LENGTH,
    Grant,
    PublicKey,
    authorize,
    check_permission,
    load_public_key,
    validate_room_segment,
)
from ysync.config import Config, redact_url
from ysync.errors import AuthError

log = logging.getLogger(__name__)

#: Longest room name accepted, in UTF-8 bytes of the raw (still percent-encoded) path segment.
MAX_ROOM_LENGTH = DEFAULT_MAX_ROOM_LENGTH

__all__ = ["Gate", "Grant", "OpenGate", "TokenGate", "open_gate", "room_as_sent",
           "room_from_path"]


def room_from_path(path: str) -> str:
    """The room of a request path ``/<room>``, undecoded as y-redis uses it (docs/protocol.md).

    Raises AuthError for paths that are not exactly one sensible segment.
    """
    if not path.startswith("/"):
        raise AuthError("no room in the path")
    return validate_room_segment(path[1:], max_length=MAX_ROOM_LENGTH)


#: What a WHATWG URL parser percent-encodes in a path (besides C0 controls and non-ASCII).
_PATH_PERCENT_ENCODE = frozenset(' "#<>?`{}')


def room_as_sent(name: str) -> str:
    """The path segment a y-websocket client sends for a room it calls ``name``.

    The client does not encode the room; the URL parser percent-encodes what a path cannot hold
    (``my room`` arrives as ``my%20room``), and ysync, like y-redis, names the room by that
    segment. Operator commands use this so that either spelling finds the same room.
    """
    out: list[str] = []
    for ch in name:
        if ord(ch) < 0x21 or ord(ch) > 0x7E or ch in _PATH_PERCENT_ENCODE:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


class Gate:
    """Decides on upgrades (:meth:`admit`) and re-checks open connections (:meth:`recheck`)."""

    async def admit(self, path: str, query: str, headers: Headers) -> Grant:
        raise NotImplementedError

    async def recheck(self, grant: Grant) -> Grant:
        """The grant's access now. AuthError: revoked. Unknown (outage): the grant as it was."""
        return grant


class OpenGate(Gate):
    """No authentication: everyone may read and write every room."""

    async def admit(self, path: str, query: str, headers: Headers) -> Grant:
        return Grant(room=room_from_path(path), user_id="", can_write=True, subprotocol=None,
                     exp_ms=None)


class TokenGate(Gate):
    """y-redis authentication: a JWT (subprotocol ``yauth-<token>`` or ``?yauth=``) and the
    permission callback ``GET <AUTH_PERM_CALLBACK>/<room>/<yuserid>``."""

    def __init__(self, config: Config, http: httpx.AsyncClient, public_key: PublicKey) -> None:
        self._auth = config.auth
        self._http = http
        self._public_key = public_key

    async def admit(self, path: str, query: str, headers: Headers) -> Grant:
        if not path.startswith("/"):
            raise AuthError("no room in the path")
        subprotocols = [item.strip() for value in headers.get_all("Sec-WebSocket-Protocol")
                        for item in value.split(",") if item.strip()]
        return await authorize(
            room_segment=path[1:],
            subprotocols=subprotocols,
            query=query,
            public_key=self._public_key,
            client=self._http,
            callback_url=self._auth.perm_callback,
            permission_timeout=self._auth.perm_timeout,
            max_token_length=self._auth.token_max_length,
            max_room_length=MAX_ROOM_LENGTH,
        )

    async def recheck(self, grant: Grant) -> Grant:
        access = await check_permission(self._http, self._auth.perm_callback, grant.room,
                                        grant.user_id, self._auth.perm_timeout)
        if access.can_write == grant.can_write:
            return grant
        return Grant(room=grant.room, user_id=grant.user_id, can_write=access.can_write,
                     subprotocol=grant.subprotocol, exp_ms=grant.exp_ms)


@asynccontextmanager
async def open_gate(config: Config) -> AsyncIterator[Gate]:
    """The gate the configuration asks for."""
    if not config.auth_enabled:
        log.warning("authentication is OFF: anyone who can reach this server may read and write "
                    "every document (set AUTH_PUBLIC_KEY and AUTH_PERM_CALLBACK to require tokens)")
        yield OpenGate()
        return
    public_key = load_public_key(config.auth.public_key, setting="auth.public_key "
                                                                 "(AUTH_PUBLIC_KEY)")
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=config.auth.perm_timeout, limits=limits) as http:
        log.info("authentication on: tokens verified with AUTH_PUBLIC_KEY, permissions from %s",
                 redact_url(config.auth.perm_callback))
        yield TokenGate(config, http, public_key)
