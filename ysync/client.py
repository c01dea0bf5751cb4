"""A small Python client of the document API (docs/api.md).

::

    async with DocumentClient("http://127.0.0.1:3003", token=jwt_or_secret) as api:
        update = await api.get_document("my room")              # a Yjs v1 update
        doc = await api.get_document("my room", format="json")  # {"text": ..., "map": ...}
        await api.apply_update("my room", update_v1)
        versions = await api.versions("my room")               # newest first
        await api.rollback("my room", versions[-1].id)

``room`` is the name a y-websocket client uses (``new WebsocketProvider(url, "my room",
doc)``): it is sent as that client sends it, percent-encoding what a URL path cannot hold
(:func:`ysync.gate.room_as_sent`), so both reach the same room. A refusal or failure raises
:class:`ApiError` with the HTTP status and the server's message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from ysync.errors import YsyncError
from ysync.gate import room_as_sent

Format = Literal["v1", "v2", "json"]


class ApiError(YsyncError):
    """The API answered with an error: ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A recorded version: its ``id``, ``time_ms``, ``size`` in bytes, ``state_vector``."""

    id: str
    time_ms: int
    size: int
    state_vector: bytes

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> VersionInfo:
        encoded = str(value["state_vector"])
        return cls(str(value["id"]), int(value["time_ms"]), int(value["size"]),
                   base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


class DocumentClient:
    """The document API at ``base_url`` (``http://host:port``), with a JWT or the backend
    secret as ``token`` (none when the API is open)."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                       timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _path(room: str, *rest: str) -> str:
        return "/".join(("/api/v1/rooms", room_as_sent(room), *rest))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"{method} {path} failed: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message)
        return response

    @staticmethod
    def _read_params(format: Format, state_vector: bytes | None) -> dict[str, str]:
        params: dict[str, str] = {"format": format}
        if state_vector is not None:
            params["state_vector"] = base64.urlsafe_b64encode(state_vector).decode().rstrip("=")
        return params

    async def get_document(self, room: str, *, format: Format = "v1",
                           state_vector: bytes | None = None) -> Any:
        """The document: a Yjs update (``bytes``; only what ``state_vector`` lacks, if given)
        or, with ``format="json"``, its shared types as JSON."""
        response = await self._request("GET", self._path(room),
                                       params=self._read_params(format, state_vector))
        return response.json() if format == "json" else response.content

    async def apply_update(self, room: str, update: bytes, *,
                           format: Literal["v1", "v2"] = "v1") -> dict[str, Any]:
        """Append a Yjs update to the room, as a client's; the server's answer."""
        content_type = f"application/vnd.yjs.update.{format}"
        response = await self._request("POST", self._path(room, "updates"), content=update,
                                       headers={"Content-Type": content_type})
        answer: dict[str, Any] = response.json()
        return answer

    async def versions(self, room: str) -> list[VersionInfo]:
        """The recorded versions of the room, newest first."""
        response = await self._request("GET", self._path(room, "versions"))
        return [VersionInfo.from_json(v) for v in response.json()["versions"]]

    async def get_version(self, room: str, version_id: str, *, format: Format = "v1",
                          state_vector: bytes | None = None) -> Any:
        """One version, as :meth:`get_document` gives the document."""
        response = await self._request("GET", self._path(room, "versions", version_id),
                                       params=self._read_params(format, state_vector))
        return response.json() if format == "json" else response.content

    async def rollback(self, room: str, version_id: str) -> dict[str, Any]:
        """Make the document what version ``version_id`` was, for every client (one new
        update); the server's answer (``changed``, ``deleted``, ``restored``)."""
        response = await self._request("POST", self._path(room, "rollback"),
                                       json={"version": version_id})
        answer: dict[str, Any] = response.json()
        return answer


__all__ = ["ApiError", "DocumentClient", "VersionInfo"]
