"""Room names and the permission callback ``GET <AUTH_PERM_CALLBACK>/<room>/<yuserid>``.

The room is the URL path segment exactly as it arrived, still percent-encoded, as y-redis uses
it; :func:`permission_url` builds the callback URL as y-redis's ``new URL(...)`` does.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass

import anyio
import httpx

from ysync.errors import AuthError

__all__ = [
    "DEFAULT_MAX_ROOM_LENGTH",
    "Access",
    "RoomNameError",
    "check_permission",
    "permission_url",
    "validate_room_segment",
]

logger = logging.getLogger(__name__)

#: Longest room path segment by default, in UTF-8 bytes. The stream key and the S3 object name
#: encode the room once more (up to 3 bytes per byte); 256 keeps object names under S3's 1024.
DEFAULT_MAX_ROOM_LENGTH = 256
_MAX_PERMISSION_ANSWER = 64 * 1024
_ENCODED_FORBIDDEN = re.compile(r"%(?:2[fF]|5[cC]|[01][0-9a-fA-F]|7[fF])")
_ENCODED_DOT = re.compile(r"%2[eE]")
# The WHATWG URL "path percent-encode set": what `new URL(...)` in y-redis encodes in a path.
_PATH_ENCODE = frozenset(b' "#<>?`{}') | frozenset(range(0x20)) | {0x7F}


class RoomNameError(AuthError):
    """A room path segment that ysync refuses (empty, a dot segment, a hidden slash, too long).

    A subclass of :class:`~ysync.errors.AuthError`, so the upgrade is refused like any other
    failed check; a server may answer it with HTTP 400 instead of 401.
    """


def validate_room_segment(segment: str, *, max_length: int = DEFAULT_MAX_ROOM_LENGTH) -> str:
    """``segment`` unchanged if it may name a room, else :class:`RoomNameError`.

    ``segment`` is the URL path segment exactly as it arrived, still percent-encoded: y-redis
    uses it undecoded as the room name, and so must ysync. Refused: an empty segment, more than
    ``max_length`` UTF-8 bytes, a ``.``/``..`` segment (also as ``%2e``), a ``/``, ``\\``,
    ``?`` or ``#`` (also ``%2f``/``%5c``), and control characters (also ``%00``-``%1f``,
    ``%7f``).
    """
    if not segment:
        raise RoomNameError("empty room name")
    try:
        size = len(segment.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise RoomNameError("invalid room name") from exc
    if size > max_length:
        raise RoomNameError("room name too long")
    _check_room_structure(segment)
    return segment


def _check_room_structure(segment: str) -> None:
    if not segment:
        raise RoomNameError("empty room name")
    if any(ch in "/\\?#" or unicodedata.category(ch) == "Cc" for ch in segment):
        raise RoomNameError("invalid character in room name")
    if _ENCODED_FORBIDDEN.search(segment):
        raise RoomNameError("invalid character in room name")
    if _ENCODED_DOT.sub(".", segment) in (".", ".."):
        raise RoomNameError("invalid room name")


def _encode_path_segment(text: str, also: bytes = b"") -> str:
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte in _PATH_ENCODE or byte >= 0x80 or byte in also:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def permission_url(callback_url: str, room: str, user_id: str) -> str:
    """``<callback_url>/<room>/<user_id>``, encoded as y-redis's ``new URL(...)`` encodes it.

    ``room`` is the raw path segment (kept percent-encoded; only what a URL path cannot hold is
    encoded, as in y-redis). ``user_id`` is encoded the same way, and also its ``/``, ``\\``,
    ``?`` and ``#``, which y-redis would let split the URL. A room that
    :func:`validate_room_segment` would refuse for its shape, and an empty, ``.`` or ``..``
    user id raise :class:`AuthError`.
    """
    _check_room_structure(room)
    if not user_id or _ENCODED_DOT.sub(".", user_id) in (".", ".."):
        raise AuthError("invalid user id")
    try:
        encoded_user = _encode_path_segment(user_id, also=b"/\\")
        encoded_room = _encode_path_segment(room)
    except UnicodeEncodeError as exc:
        raise AuthError("invalid user id") from exc
    base = callback_url if callback_url.endswith("/") else callback_url + "/"
    return f"{base}{encoded_room}/{encoded_user}"


class PermissionUnavailable(AuthError):
    """The permission callback gave no answer (network error, timeout, HTTP 5xx).

    At the upgrade this is a refusal like any other; for a connection already open, a
    re-check that ends so keeps the access it had (a passing outage does not kick everyone).
    """


@dataclass(frozen=True)
class Access:
    """What the permission callback granted: write access or read-only, and for which user."""

    can_write: bool
    user_id: str


async def check_permission(
    client: httpx.AsyncClient,
    callback_url: str,
    room: str,
    user_id: str,
    timeout: float,  # noqa: ASYNC109 - also httpx's per-operation timeout
) -> Access:
    """Ask ``GET <callback_url>/<room>/<user_id>`` whether ``user_id`` may read or write ``room``.

    The answer is JSON ``{"yroom", "yaccess", "yuserid"}``: ``yaccess == "rw"`` grants write
    access, any other value read-only; ``yuserid``, if a non-empty string, names the user from
    then on (as y-redis does). No answer within ``timeout`` seconds, a network error, a non-2xx
    status, a body that is not a JSON object with ``yaccess`` or exceeds 64 KiB: :class:`AuthError`.
    """
    url = permission_url(callback_url, room, user_id)
    try:
        with anyio.fail_after(timeout):
            async with client.stream(
                "GET", url, timeout=timeout, follow_redirects=True
            ) as response:
                if not response.is_success:
                    logger.warning("permission callback %s answered HTTP %d", url,
                                   response.status_code)
                    error = (PermissionUnavailable if response.status_code >= 500
                             else AuthError)
                    raise error(f"permission check answered HTTP {response.status_code}")
                body = await _read_limited(response, url)
    except (TimeoutError, httpx.TimeoutException) as exc:
        logger.warning("permission callback %s did not answer within %.3g s", url, timeout)
        raise PermissionUnavailable("permission check timed out") from exc
    except httpx.HTTPError as exc:
        logger.warning("permission callback %s failed: %r", url, exc)
        raise PermissionUnavailable("permission check failed") from exc
    try:
        answer = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        logger.warning("permission callback %s answered something that is not JSON", url)
        raise AuthError("invalid permission answer") from exc
    if not isinstance(answer, dict) or "yaccess" not in answer:
        logger.warning("permission callback %s answered JSON without 'yaccess'", url)
        raise AuthError("invalid permission answer")
    granted_user = answer.get("yuserid")
    return Access(
        can_write=answer["yaccess"] == "rw",
        user_id=granted_user if isinstance(granted_user, str) and granted_user else user_id,
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def _read_limited(response: httpx.Response, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_PERMISSION_ANSWER:
            logger.warning("permission callback %s answered more than %d bytes", url,
                           _MAX_PERMISSION_ANSWER)
            raise AuthError("invalid permission answer")
        chunks.append(chunk)
    return b"".join(chunks)

