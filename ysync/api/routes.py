"""The endpoints of the document API (docs/api.md), as small handlers over shared parts.

=======  ====================================  ===========================================
GET      /api/v1/rooms/<room>                  the document (snapshot + stream)
POST     /api/v1/rooms/<room>/updates          append a Yjs update, as a client's
GET      /api/v1/rooms/<room>/versions         the recorded versions, newest first
GET      /api/v1/rooms/<room>/versions/<id>    one version
POST     /api/v1/rooms/<room>/rollback         make the document a version again
=======  ====================================  ===========================================

``<room>`` is the room exactly as the WebSocket URL's path segment carries it (still
percent-encoded), so both name the same stream. Documents are read in the format ``?format=``
names (``v1``, ``v2``, ``json``), else the one ``Accept`` asks for (``application/json``, or
:data:`MEDIA_V1`/:data:`MEDIA_V2`), else v1; ``?state_vector=<base64url>`` returns only what that
state vector lacks. An update is appended exactly as a y-websocket client's is (the same stream
entry, the same Lua script), so live clients on every server receive it at once and the worker
compacts it; a rollback is such an update too (:mod:`ysync.rollback`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import anyio.to_process
import anyio.to_thread

from ysync.api.access import Access, ApiError, Caller, credential
from ysync.api.http import Limits, Request, Response, error_response, serve_http
from ysync.auth import RoomNameError, validate_room_segment
from ysync.config import Config
from ysync.docjson import document_json, dumps
from ysync.docs import LoadedDoc, load_doc
from ysync.doctree import DocTree
from ysync.errors import BusError, DocumentError, StorageError, UpdateFormatError
from ysync.gate import MAX_ROOM_LENGTH, Gate
from ysync.logs import safe
from ysync.protocol import encode_sync_update, is_valid_update
from ysync.redis_clients import RedisClient
from ysync.rollback import EMPTY_UPDATE, rollback
from ysync.storage.base import Storage
from ysync.storage.versions import VERSION_ID, VersionStore, versions_of
from ysync.streams import INDEX_DOC, Scripts
from ysync.updates import diff_v1, diff_v2, state_vector_from_v2, v1_to_v2, v2_to_v1
from ysync.updates.v1 import decode_v1

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "/api/v1/rooms/"
#: Media types of Yjs updates (there is no registered one).
MEDIA_V1 = "application/vnd.yjs.update.v1"
MEDIA_V2 = "application/vnd.yjs.update.v2"
_MEDIA = {"v1": MEDIA_V1, "v2": MEDIA_V2, "json": "application/json"}
#: Work on documents up to this size runs on the event loop; larger in a worker process.
_INLINE_BYTES = 32 * 1024
STATE_VECTOR_HEADER = "x-ysync-state-vector"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def parse_state_vector(text: str) -> bytes:
    """A state vector from base64url or base64 (padding optional; ``+`` read as a space)."""
    cleaned = text.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "state_vector is not base64") from exc


def render_json(update_v1: bytes) -> bytes:
    """The document ``update_v1`` as JSON text (:mod:`ysync.docjson`). Pure, CPU-bound."""
    return dumps(document_json(DocTree(decode_v1(update_v1)))).encode("utf-8") + b"\n"


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n")


async def _cpu(size: int, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` inline for small inputs, else in a worker process."""
    if size <= _INLINE_BYTES:
        return func(*args)
    return await anyio.to_process.run_sync(partial(func, *args), cancellable=True)


class DocumentApi:
    """The API's request handler: routes a request to its endpoint (module docstring)."""

    def __init__(self, config: Config, client: RedisClient, storage: Storage,
                 gate: Gate) -> None:
        self._config = config
        self._client = client
        self._storage = storage
        self._layout = config.layout
        self._scripts = Scripts(client, self._layout)
        self.access = Access(gate, config.api.secret)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.message)
            if exc.status == 401:
                response.headers.append(("www-authenticate", "Bearer"))
            return response
        except BusError as exc:
            log.error("document API: %s", exc)
            return error_response(503, "redis unavailable")
        except StorageError as exc:
            log.error("document API: %s", exc)
            return error_response(503, "storage unavailable")
        except DocumentError as exc:
            return error_response(422, str(exc))
        except UpdateFormatError as exc:
            log.error("document API: a stored document does not decode: %s", exc)
            return error_response(500, "document unavailable: it does not decode")

    async def _route(self, request: Request) -> Response:
        if not request.path.startswith(PREFIX):
            raise ApiError(404, "not found (the document API is under /api/v1/rooms/<room>)")
        room, *rest = request.path[len(PREFIX):].split("/")
        try:
            validate_room_segment(room, max_length=MAX_ROOM_LENGTH)
        except RoomNameError as exc:
            raise ApiError(400, exc.reason) from exc
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        routes: dict[tuple[str, ...], dict[str, Callable[..., Awaitable[Response]]]] = {
            (): {"GET": self._read},
            ("updates",): {"POST": self._write},
            ("versions",): {"GET": self._versions},
            ("rollback",): {"POST": self._rollback},
        }
        args: tuple[str, ...] = ()
        key = tuple(rest)
        if len(rest) == 2 and rest[0] == "versions":
            key, args = ("versions", "<id>"), (rest[1],)
            routes[key] = {"GET": self._version}
        methods = routes.get(key)
        if methods is None:
            raise ApiError(404, "not found")
        handler = methods.get(request.method)
        if handler is None:
            return Response(405, json.dumps({"error": "method not allowed"}).encode() + b"\n",
                            headers=[("allow", ", ".join(methods))])
        return await handler(room, request, query, *args)

    async def _caller(self, room: str, request: Request, *, write: bool) -> Caller:
        token = credential(request.header("authorization"), request.query)
        return await self.access.check(room, token, write=write)

    # --- reading ----------------------------------------------------------------------------

    def _format(self, request: Request, query: dict[str, str]) -> str:
        named = query.get("format")
        if named is not None:
            if named not in _MEDIA:
                raise ApiError(400, "format must be v1, v2 or json")
            return named
        for item in (request.header("accept") or "").split(","):
            media = item.split(";", 1)[0].strip().lower()
            if media == "application/json":
                return "json"
            if media == MEDIA_V2:
                return "v2"
            if media in (MEDIA_V1, "application/octet-stream", "*/*", "application/*"):
                return "v1"
        return "v1"

    async def _load(self, room: str) -> LoadedDoc:
        return await load_doc(self._client, self._storage, self._layout, room, INDEX_DOC)

    async def _answer(self, update_v1: bytes, update_v2: bytes | None, state_vector: bytes,
                      fmt: str, query: dict[str, str]) -> Response:
        """A document (v1, and v2 if at hand) in the format asked for."""
        headers = [(STATE_VECTOR_HEADER, _b64(state_vector))]
        known = query.get("state_vector")
        if fmt == "json":
            if known:
                raise ApiError(400, "state_vector applies to the update formats v1 and v2")
            body = await _cpu(len(update_v1), render_json, update_v1)
            return Response(200, body, _MEDIA[fmt], headers)
        if known:
            vector = parse_state_vector(known)
            try:
                if fmt == "v2" and update_v2 is not None:
                    body = await _cpu(len(update_v2), diff_v2, update_v2, vector)
                else:
                    body = await _cpu(len(update_v1), diff_v1, update_v1, vector)
            except UpdateFormatError as exc:
                raise ApiError(400, f"state_vector does not decode: {exc}") from exc
            if fmt == "v2" and update_v2 is None:
                body = await _cpu(len(body), v1_to_v2, body)
        elif fmt == "v2":
            body = update_v2 if update_v2 is not None else await _cpu(
                len(update_v1), v1_to_v2, update_v1)
        else:
            body = update_v1
        return Response(200, body, _MEDIA[fmt], headers)

    async def _read(self, room: str, request: Request, query: dict[str, str]) -> Response:
        await self._caller(room, request, write=False)
        fmt = self._format(request, query)
        loaded = await self._load(room)
        return await self._answer(loaded.full_update, None, loaded.state_vector, fmt, query)

    # --- writing ----------------------------------------------------------------------------

    async def _append(self, room: str, update_v1: bytes) -> None:
        await self._scripts.append(self._layout.room_key(room),
                                   encode_sync_update(update_v1))

    async def _write(self, room: str, request: Request, query: dict[str, str]) -> Response:
        caller = await self._caller(room, request, write=True)
        update = request.body
        if not update:
            raise ApiError(400, "the body must be a Yjs update")
        v2 = query.get("format") == "v2" or (
            (request.header("content-type") or "").split(";", 1)[0].strip().lower() == MEDIA_V2)
        if v2:
            try:
                update = await _cpu(len(update), v2_to_v1, update)
            except UpdateFormatError as exc:
                raise ApiError(400, f"the body is not a Yjs v2 update: {exc}") from exc
        elif not await _cpu(len(update), is_valid_update, update):
            raise ApiError(400, "the body is not a Yjs v1 update (send v2 with Content-Type: "
                                f"{MEDIA_V2})")
        if update == EMPTY_UPDATE:
            return _json(200, {"room": room, "appended": False, "size": 0})
        await self._append(room, update)
        log.info("document API: %s appended an update of %d bytes to room %s",
                 _who(caller), len(update), safe(room))
        return _json(200, {"room": room, "appended": True, "size": len(update)})

    # --- history ----------------------------------------------------------------------------

    def _store(self) -> VersionStore:
        return versions_of(self._storage)

    async def _versions(self, room: str, request: Request, query: dict[str, str]) -> Response:
        await self._caller(room, request, write=False)
        versions = await self._store().versions(room, INDEX_DOC)
        return _json(200, {"room": room, "history": self._config.history.enabled,
                           "versions": [v.to_json() for v in reversed(versions)]})

    async def _version_bytes(self, room: str, version_id: str) -> bytes:
        data = None
        if VERSION_ID.match(version_id):
            data = await self._store().read(room, INDEX_DOC, version_id)
        if data is None:
            raise ApiError(404, f"room {room!r} has no version {version_id!r}")
        return data

    async def _version(self, room: str, request: Request, query: dict[str, str],
                       version_id: str) -> Response:
        await self._caller(room, request, write=False)
        fmt = self._format(request, query)
        data = await self._version_bytes(room, version_id)
        try:
            update_v1 = await _cpu(len(data), v2_to_v1, data)
            state_vector = await _cpu(len(data), state_vector_from_v2, data)
        except UpdateFormatError as exc:
            log.error("document API: version %s of room %s does not decode: %s", version_id,
                      safe(room), exc)
            raise ApiError(500, "version unavailable: it does not decode") from exc
        return await self._answer(update_v1, data, state_vector, fmt, query)

    async def _rollback(self, room: str, request: Request, query: dict[str, str]) -> Response:
        caller = await self._caller(room, request, write=True)
        version_id = query.get("version")
        if version_id is None and request.body:
            try:
                body = json.loads(request.body)
            except ValueError as exc:
                raise ApiError(400, 'the body must be JSON {"version": "<id>"}') from exc
            if isinstance(body, dict) and isinstance(body.get("version"), str):
                version_id = body["version"]
        if not version_id:
            raise ApiError(400, 'name the version: {"version": "<id>"} (or ?version=<id>)')
        data = await self._version_bytes(room, version_id)
        loaded = await self._load(room)
        try:
            change = await _cpu(len(loaded.full_update) + len(data), rollback,
                                loaded.full_update, data)
        except DocumentError as exc:
            raise ApiError(409, str(exc)) from exc
        answer = {"room": room, "version": version_id, "changed": change.update != EMPTY_UPDATE,
                  "deleted": change.deleted, "restored": change.restored,
                  "size": 0 if change.update == EMPTY_UPDATE else len(change.update)}
        if change.update != EMPTY_UPDATE:
            await self._append(room, change.update)
            log.info("document API: %s rolled room %s back to version %s (%d items deleted, "
                     "%d restored; client %d)", _who(caller), safe(room), version_id,
                     change.deleted, change.restored, change.client)
        return _json(200, answer)


def _who(caller: Caller) -> str:
    if caller.by_secret:
        return "the backend (api.secret)"
    return f"user {caller.user_id!r}" if caller.user_id else "a caller"


async def serve_api(config: Config, client: RedisClient, storage: Storage, gate: Gate, *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the document API on ``api.host:api.port`` until cancelled (``ysync serve`` runs
    it beside the WebSocket server); ``task_status`` gets the bound port."""
    api = DocumentApi(config, client, storage, gate)
    limits = Limits(max_connections=config.api.max_connections,
                    max_body_size=config.api.max_body_size,
                    request_timeout=config.api.request_timeout,
                    idle_timeout=config.api.idle_timeout)
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(serve_http, api, config.api.host, config.api.port,
                                      limits, reuse_port=config.server.reuse_port))
        log.info("document API listening on http://%s:%d/api/v1/rooms/<room> (%s)",
                 config.api.host, port,
                 "open: anyone who reaches it may read and write" if api.access.open
                 else "a token or api.secret is required")
        task_status.started(port)


__all__ = ["MEDIA_V1", "MEDIA_V2", "PREFIX", "DocumentApi", "parse_state_vector",
           "render_json", "serve_api"]
