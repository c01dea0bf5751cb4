"""Who may open a room, and may they write: y-redis 0.1.x compatible authentication.

A client proves who it is with a JWT made by lib0 ``crypto/jwt`` (ES384: ECDSA P-384 with
SHA-384), sent as the WebSocket subprotocol ``yauth-<token>`` or the query parameter ``yauth``.
The claim ``yuserid`` names the user; ``exp`` is in MILLISECONDS since the epoch. The server then
asks the permission callback ``GET <AUTH_PERM_CALLBACK>/<room>/<yuserid>``, which answers JSON
``{"yroom", "yaccess", "yuserid"}``; only ``yaccess == "rw"`` may write.

Modules: :mod:`~ysync.auth.keys` (JWK keys, ``AUTH_PUBLIC_KEY``/``AUTH_PRIVATE_KEY``),
:mod:`~ysync.auth.tokens` (mint, verify, extract; pure), :mod:`~ysync.auth.permission` (room
segments, the callback). :func:`authorize` runs every check of one WebSocket upgrade. Refusals
raise :class:`~ysync.errors.AuthError` (``reason`` is safe to show and never holds the token);
bad key settings raise :class:`~ysync.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ysync.auth.keys import (
    ALGORITHM,
    CURVE,
    PrivateKey,
    PublicKey,
    generate_keypair,
    keypair_env_lines,
    load_private_key,
    load_public_key,
)
from ysync.auth.permission import (
    DEFAULT_MAX_ROOM_LENGTH,
    Access,
    PermissionUnavailable,
    RoomNameError,
    check_permission,
    permission_url,
    validate_room_segment,
)
from ysync.auth.tokens import (
    DEFAULT_MAX_TOKEN_LENGTH,
    TOKEN_QUERY_PARAMETER,
    TOKEN_SUBPROTOCOL_PREFIX,
    Claims,
    current_time_ms,
    extract_token,
    mint_token,
    verify_token,
)
from ysync.errors import AuthError

__all__ = [
    "ALGORITHM",
    "CURVE",
    "DEFAULT_MAX_ROOM_LENGTH",
    "DEFAULT_MAX_TOKEN_LENGTH",
    "TOKEN_QUERY_PARAMETER",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "Access",
    "Claims",
    "Grant",
    "PermissionUnavailable",
    "PrivateKey",
    "PublicKey",
    "RoomNameError",
    "authorize",
    "check_permission",
    "current_time_ms",
    "extract_token",
    "generate_keypair",
    "keypair_env_lines",
    "load_private_key",
    "load_public_key",
    "mint_token",
    "permission_url",
    "validate_room_segment",
    "verify_token",
]


@dataclass(frozen=True)
class Grant:
    """An authorized connection: its room (raw segment), user, access and subprotocol to echo."""

    room: str
    user_id: str
    can_write: bool
    subprotocol: str | None
    exp_ms: float | None


async def authorize(
    *,
    room_segment: str,
    subprotocols: Sequence[str],
    query: str,
    public_key: PublicKey,
    client: httpx.AsyncClient,
    callback_url: str,
    permission_timeout: float,
    now_ms: int | None = None,
    max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
    max_room_length: int = DEFAULT_MAX_ROOM_LENGTH,
) -> Grant:
    """Every check y-redis makes before it accepts a WebSocket upgrade.

    Validates the room segment, takes the token from the subprotocols or the query, verifies it
    at ``now_ms`` (default: now) and asks the permission callback. Any failure raises
    :class:`~ysync.errors.AuthError` (y-redis answers HTTP 401; a :class:`RoomNameError` may be
    answered with 400).
    """
    room = validate_room_segment(room_segment, max_length=max_room_length)
    token, subprotocol = extract_token(subprotocols, query)
    if token is None:
        raise AuthError("missing token")
    at = current_time_ms() if now_ms is None else now_ms
    claims = verify_token(token, public_key, at, max_length=max_token_length)
    access = await check_permission(client, callback_url, room, claims.user_id, permission_timeout)
    return Grant(room=room, user_id=access.user_id, can_write=access.can_write,
                 subprotocol=subprotocol, exp_ms=claims.exp_ms)
