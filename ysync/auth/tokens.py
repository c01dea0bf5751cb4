"""Tokens: the JWTs of lib0 ``crypto/jwt`` (ES384, ``exp`` in milliseconds, claim ``yuserid``).

Pure functions: the clock is a parameter. A refused token raises :class:`~ysync.errors.AuthError`
whose ``reason`` is short, safe to show to a client and never contains the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError

from ysync.auth.keys import ALGORITHM, PrivateKey, PublicKey
from ysync.errors import AuthError

__all__ = [
    "DEFAULT_MAX_TOKEN_LENGTH",
    "TOKEN_QUERY_PARAMETER",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "Claims",
    "current_time_ms",
    "extract_token",
    "mint_token",
    "verify_token",
]

#: Longest token :func:`verify_token` accepts by default, in characters.
DEFAULT_MAX_TOKEN_LENGTH = 8 * 1024
#: The ``Sec-WebSocket-Protocol`` element that carries a token starts with this.
TOKEN_SUBPROTOCOL_PREFIX = "yauth-"
#: The query parameter that carries a token when no subprotocol does.
TOKEN_QUERY_PARAMETER = "yauth"

_HEADER = {"alg": ALGORITHM, "typ": "JWT"}
# ES384 only: "none", HS256 (public key as HMAC secret) and ES256 never reach a verifier.
_REGISTRY = jws.JWSRegistry(algorithms=[ALGORITHM])
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def current_time_ms() -> int:
    """The current time in milliseconds since the epoch (lib0 ``time.getUnixTime``)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Claims:
    """What a verified token says: the user, its expiry (ms, ``None`` = never) and all claims."""

    user_id: str
    exp_ms: float | None
    claims: Mapping[str, Any] = field(hash=False, compare=False)


def mint_token(
    private_key: PrivateKey,
    user_id: str,
    ttl_seconds: float,
    now_ms: int | None = None,
    *,
    issuer: str | None = None,
) -> str:
    """A token for ``user_id`` that expires ``ttl_seconds`` after ``now_ms`` (default: now).

    The same JWT lib0 ``jwt.encodeJwt`` makes: header ``{"alg":"ES384","typ":"JWT"}``, payload
    ``{"iss"?, "iat", "exp", "yuserid"}`` with ``iat``/``exp`` in milliseconds.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if not math.isfinite(ttl_seconds) or ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be a positive number")
    issued = _now_ms_default(now_ms)
    payload: dict[str, Any] = {}
    if issuer is not None:
        payload["iss"] = issuer
    payload["iat"] = issued
    payload["exp"] = issued + round(ttl_seconds * 1000)
    payload["yuserid"] = user_id
    # JSON.stringify: compact, non-ASCII left as UTF-8.
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return jws.serialize_compact(dict(_HEADER), body, private_key.key, registry=_REGISTRY)


def _now_ms_default(value: int | None) -> int:
    return current_time_ms() if value is None else value


def verify_token(
    token: str,
    public_key: PublicKey,
    now_ms: int,
    *,
    max_length: int = DEFAULT_MAX_TOKEN_LENGTH,
) -> Claims:
    """Check a token's signature, algorithm and expiry; :class:`AuthError` if it is not good.

    Accepted: ES384 signed by ``public_key``, ``exp`` absent/null (as lib0) or a number of
    milliseconds not before ``now_ms``, and a non-empty string ``yuserid``.
    """
    if not isinstance(token, str) or not token:
        raise AuthError("missing token")
    if len(token) > max_length:
        raise AuthError("token too long")
    if not token.isascii() or _TOKEN_SHAPE.fullmatch(token) is None:
        raise AuthError("malformed token")
    header = _decode_segment(token.partition(".")[0], "malformed token header")
    if header.get("alg") != ALGORITHM:
        raise AuthError("unsupported token algorithm")
    if "crit" in header or "b64" in header:
        raise AuthError("unsupported token header")
    try:
        signed = jws.deserialize_compact(token, public_key.key, registry=_REGISTRY)
    except BadSignatureError as exc:
        raise AuthError("invalid token signature") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise AuthError("invalid token") from exc
    payload = _decode_json(signed.payload, "malformed token payload")
    exp = payload.get("exp")
    if exp is not None:
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise AuthError("invalid token expiry")
        if now_ms > exp:  # lib0 jwt.verifyJwt: expired only strictly after exp
            raise AuthError("token expired")
    user_id = payload.get("yuserid")
    if not isinstance(user_id, str) or not user_id:
        raise AuthError("token has no yuserid")
    return Claims(user_id=user_id, exp_ms=None if exp is None else exp, claims=payload)


def _decode_segment(segment: str, reason: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError(reason) from exc
    return _decode_json(raw, reason)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _decode_json(raw: bytes, reason: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AuthError(reason) from exc
    if not isinstance(value, dict):
        raise AuthError(reason)
    return value


def extract_token(subprotocols: Sequence[str], query: str) -> tuple[str | None, str | None]:
    """The token a client sent and the subprotocol to echo: ``(token, subprotocol)``.

    First the ``Sec-WebSocket-Protocol`` element ``yauth-<token>`` (the element itself is
    returned for the server to echo: browsers drop a connection whose accepted subprotocol they
    did not offer), else the ``yauth`` query parameter (``query`` with or without its ``?``),
    else ``(None, None)``. An empty token counts as none.
    """
    for element in subprotocols:
        element = element.strip()
        if element.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(element) > len(
            TOKEN_SUBPROTOCOL_PREFIX
        ):
            return element[len(TOKEN_SUBPROTOCOL_PREFIX):], element
    for name, value in parse_qsl(query.removeprefix("?"), keep_blank_values=True):
        if name == TOKEN_QUERY_PARAMETER:
            return (value or None), None
    return None, None

