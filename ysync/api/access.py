"""Who may use the document API on which room: the WebSocket's rules, plus a backend secret.

A caller proves who it is with ``Authorization: Bearer <credential>`` (or ``?yauth=<token>``,
as a WebSocket client may). The credential is

* ``api.secret``, compared in constant time: a backend that may read and write every room;
* or a y-redis JWT, checked exactly as a WebSocket upgrade checks it (:class:`~ysync.gate.Gate`:
  the token's signature and expiry, then the permission callback for the room): ``rw`` may
  read and write, any other answer may only read.

With authentication off (no ``AUTH_PUBLIC_KEY``, the embedded default) the API is open like the
WebSocket, unless ``api.secret`` is set: then the secret is required. Refusals are
:class:`ApiError` with the status to answer: 401 (no or bad credential), 403 (the permission
callback refused, or read-only access for a write), 400 (a room name ysync refuses), 503 (the
permission callback did not answer).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from websockets.datastructures import Headers

from ysync.auth import PermissionUnavailable, RoomNameError
from ysync.errors import AuthError, YsyncError
from ysync.gate import Gate, OpenGate


class ApiError(YsyncError):
    """An API request refused or failed: ``status`` and a ``message`` safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: ``user_id`` ("" when open or by the secret), and may it write."""

    user_id: str
    can_write: bool
    by_secret: bool = False


def credential(authorization: str | None, query: str) -> str | None:
    """The bearer credential of a request: the Authorization header, else ``?yauth=``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "yauth" and value:
            return value
    return None


class Access:
    """Checks callers against ``gate`` (the WebSocket server's) and ``secret``."""

    def __init__(self, gate: Gate, secret: str) -> None:
        self._gate = gate
        self._secret = secret.encode("utf-8")

    @property
    def open(self) -> bool:
        """True when anyone may call (auth off and no secret)."""
        return isinstance(self._gate, OpenGate) and not self._secret

    async def check(self, room: str, token: str | None, *, write: bool) -> Caller:
        """The caller of ``room`` with ``token``; ApiError when refused (module docstring)."""
        if self._secret and token is not None and hmac.compare_digest(
                token.encode("utf-8"), self._secret):
            return Caller("", True, by_secret=True)
        if isinstance(self._gate, OpenGate):
            if self._secret:
                raise ApiError(401, "this API requires the backend secret (api.secret)"
                               if token is None else "wrong backend secret")
            return Caller("", True)
        if token is None:
            raise ApiError(401, "missing token (Authorization: Bearer <token>)")
        try:
            grant = await self._gate.admit(f"/{room}", "yauth=" + quote(token, safe=""),
                                           Headers())
        except RoomNameError as exc:
            raise ApiError(400, exc.reason) from exc
        except PermissionUnavailable as exc:
            raise ApiError(503, exc.reason) from exc
        except AuthError as exc:
            refused_by_callback = exc.reason.startswith("permission check") or \
                exc.reason == "invalid permission answer"
            raise ApiError(403 if refused_by_callback else 401, exc.reason) from exc
        if write and not grant.can_write:
            raise ApiError(403, f"user {grant.user_id!r} may only read room {room!r}")
        return Caller(grant.user_id, grant.can_write)


__all__ = ["Access", "ApiError", "Caller", "credential"]
