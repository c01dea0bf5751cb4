"""The WebSocket server: ``ws://host:port/<room>``, ``GET /healthz``, ``/readyz``, ``/metrics``.

Life of a connection (docs/protocol.md): the request is authorized (:mod:`ysync.gate`), the
connection subscribes to its room stream, the room's document is loaded (shared with every
simultaneous joiner), the client gets sync step 1 and the room's awareness states, and its own
sync step 1 is answered with only what it lacks. From then on the client's updates and awareness
go to the room stream, and the stream reader (:mod:`ysync.bus`) sends the room's merged messages
to every local connection. The server keeps no document in memory after a client's initial sync.
When Redis lost its data (:mod:`ysync.epoch`), every connected client is asked for its whole
document again (:func:`recover_lost_data`), which restores the room streams.

Stopping (:meth:`RunningServer.drain`, what ``ysync serve`` does on SIGTERM): readiness fails at
once and new upgrades are refused with 503 (a load balancer retries them on another server);
the open connections are closed with 1012 (service restart) one by one at random moments over
``server.drain_period``, so that their clients reconnect to the other servers gradually, not in
one burst; pending appends are flushed and the in-process worker finishes its tasks in hand.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ysync.appender import Appender
from ysync.auth import PermissionUnavailable, current_time_ms
from ysync.bus import Bus
from ysync.cluster import (
    ClusterNodes,
    ShardedAppender,
    ShardedBus,
    check_cluster_layout,
    cluster_client,
    ping,
)
from ysync.config import Config, redact_url
from ysync.connection import Connection, websocket_frame
from ysync.control import (
    Revocation,
    listen_for_commands,
    read_revocations,
    read_room_revocations,
    revoked_connections,
)
from ysync.demo import demo_off_response, demo_response
from ysync.epoch import EpochMarker, shard_epoch_keys
from ysync.errors import (
    AuthError,
    BusError,
    ProtocolError,
    StorageError,
    UpdateFormatError,
    YsyncError,
)
from ysync.gate import Gate, Grant, open_gate
from ysync.logs import safe, set_log_context
from ysync.metrics import CONTENT_TYPE, Metrics
from ysync.protocol import (
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_disconnect_message,
    decode_awareness,
    decode_message,
    encode_auth_denied,
    encode_awareness,
    encode_awareness_entries,
    encode_sync_step1,
    is_valid_update,
)
from ysync.redis_clients import RedisClient, redis_client, redis_pool
from ysync.rooms import DocLoader, JoinDoc
from ysync.sentinel import is_sentinel_url
from ysync.sentinel_pool import follow_master
from ysync.storage.base import Storage
from ysync.streams import Layout, ensure_worker_groups

log = logging.getLogger(__name__)

CLOSE_PROTOCOL_ERROR = 1002
#: A Yjs v1 update with no structs and an empty delete set.
EMPTY_UPDATE = b"\x00\x00"
#: A state vector of no clients: "I have nothing".
EMPTY_STATE_VECTOR = b"\x00"
CLOSE_UNSUPPORTED_DATA = 1003
#: "Service restart": the client should reconnect (y-websocket does, to whichever server).
CLOSE_SERVICE_RESTART = 1012
#: Seconds a readiness answer is reused: probes from several balancers cost one check.
READINESS_TTL = 1.0
#: Seconds one readiness check waits for Redis and for the storage at most.
READINESS_TIMEOUT = 5.0
#: In y-websocket's "do not reconnect" range 4400-4499 (mirrors HTTP 403).
CLOSE_PERMISSION_REVOKED = 4403
#: How far before the newest revocation record seen a sweep reads again (Redis clock steps).
SWEEP_SLACK_MS = 60_000


@dataclass(slots=True)
class RunningServer:
    """What a started server exposes: where it listens and its parts (for tests and metrics)."""

    port: int
    host: str
    redis_url: str
    bus: Bus | ShardedBus
    loader: DocLoader
    handler: SyncHandler
    #: Drain and finish (module docstring); after it returns, leaving the context exits.
    drain: Callable[[], Awaitable[None]]


class SyncHandler:
    """Handles HTTP requests and WebSocket connections for one server process."""

    def __init__(self, config: Config, client: RedisClient, bus: Bus | ShardedBus,
                 loader: DocLoader, gate: Gate, metrics: Metrics,
                 appender: Appender | ShardedAppender,
                 storage: Storage | None = None) -> None:
        self._config = config
        self._storage = storage
        #: True once the server stops: readiness fails and upgrades are refused
        self.draining = False
        self._no_connections = asyncio.Event()
        self._readiness: tuple[float, str | None] | None = None  # (when, what failed)
        self.metrics = metrics
        self._client = client
        self._bus = bus
        self._loader = loader
        self._gate = gate
        self._appender = appender
        # and when it arrived; weak: websockets may refuse the handshake after process_request
        # admitted it (a bad Sec-WebSocket-Key, a client gone, 503 while stopping), and then
        # handle() never pops the entry, which would keep the connection alive for ever
        self._grants: weakref.WeakKeyDictionary[ServerConnection, tuple[Grant, int]] = \
            weakref.WeakKeyDictionary()
        self.connections: set[Connection] = set()
        metrics.bind_gauges(lambda: len(self.connections), lambda: len(bus.rooms),
                            lambda: sum(c.queued_bytes for c in self.connections))

    # --- HTTP --------------------------------------------------------------------------------

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/healthz":
            return await self._health(ws)
        if path == "/readyz":
            return await self._ready(ws)
        if path == "/livez":  # the process answers: for a liveness probe, which must not
            # restart servers because Redis or the storage is down
            return ws.respond(HTTPStatus.OK, "alive\n")
        if path == "/metrics":
            body = self.metrics.render()
            headers = Headers([("Content-Type", CONTENT_TYPE),
                               ("Content-Length", str(len(body)))])
            return Response(HTTPStatus.OK, "OK", headers, body)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            page = (demo_response if self._config.serve_demo else demo_off_response)(path)
            if page is not None:
                return Response(page.status, page.status.phrase, Headers(page.headers), page.body)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if self.draining:
            # 503: a load balancer (nginx's proxy_next_upstream http_503) tries another server
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining: connect again\n")
        opened_ms = current_time_ms()  # before the permission check: a kick during it counts
        try:
            grant = await self._gate.admit(path, query, request.headers)
        except AuthError as exc:
            self.metrics.refused.inc()
            log.info("refused %s: %s", _safe_path(path), exc.reason)
            return ws.respond(HTTPStatus.UNAUTHORIZED, f"unauthorized: {exc.reason}\n")
        self._grants[ws] = (grant, opened_ms)
        return None

    async def _health(self, ws: ServerConnection) -> Response:
        try:
            with anyio.fail_after(self._config.redis.timeout):
                await ping(self._client)
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError,
                TimeoutError) as exc:
            log.warning("health check: Redis does not answer: %s", exc)
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "redis unavailable\n")
        return ws.respond(HTTPStatus.OK, "ok\n")

    async def _ready(self, ws: ServerConnection) -> Response:
        """200 only when Redis and the storage answer and the server is not draining."""
        if self.draining:
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        now = time.monotonic()
        if self._readiness is None or now - self._readiness[0] > READINESS_TTL:
            problem = await self._readiness_problem()
            self._readiness = (time.monotonic(), problem)
        problem = self._readiness[1]
        if problem is not None:
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{problem}\n")
        return ws.respond(HTTPStatus.OK, "ready\n")

    async def _readiness_problem(self) -> str | None:
        timeout = min(READINESS_TIMEOUT, self._config.redis.timeout)
        try:
            with anyio.fail_after(timeout):
                await ping(self._client)
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError,
                TimeoutError) as exc:
            log.warning("readiness: Redis does not answer: %s", exc)
            return "redis unavailable"
        if self._storage is not None:
            try:
                with anyio.fail_after(min(READINESS_TIMEOUT, self._config.storage.timeout)):
                    await self._storage.check()
            except (StorageError, TimeoutError) as exc:
                log.warning("readiness: storage does not answer: %s", exc or "timed out")
                return "storage unavailable"
        return None

    async def drain(self, period: float) -> None:
        """Refuse new connections and close the open ones with 1012, each at a random moment
        within ``period`` seconds; return once all are closed (or ``server.close_timeout``
        after the last was asked to close)."""
        self.draining = True
        conns = [c for c in self.connections if not c.closing]
        log.info("draining: closing %d connection(s) with 1012 over %.1f s", len(conns), period)
        start = anyio.current_time()
        for delay, conn in sorted(((random.uniform(0, period), c) for c in conns),
                                  key=lambda pair: pair[0]):
            await anyio.sleep_until(start + delay)
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
        for conn in list(self.connections):  # upgraded while the first ones closed
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
        if self.connections:
            with anyio.move_on_after(self._config.server.close_timeout + 1):
                await self._no_connections.wait()
        log.info("drained in %.1f s (%d connection(s) still open)",
                 anyio.current_time() - start, len(self.connections))

    def select_subprotocol(self, ws: ServerConnection,
                           offered: Sequence[Subprotocol]) -> Subprotocol | None:
        admitted = self._grants.get(ws)
        if admitted is None or admitted[0].subprotocol is None:
            return None
        return Subprotocol(admitted[0].subprotocol)

    # --- WebSocket ---------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        grant, opened_ms = self._grants.pop(ws)
        # this connection's lines carry its room, id and user (JSON logs); the fields end with
        # the handler's task, which websockets runs for each connection
        set_log_context(room=grant.room, connection=ws.id.hex[:8], user=grant.user_id)
        # the handshake is over: its headers would only cost memory for the connection's life
        # (the request object itself must stay: websockets tells frames from it by its presence)
        for message in (ws.request, ws.response):
            if message is not None:
                message.headers = Headers()
        conn = Connection(ws, grant, send_buffer_limit=self._config.server.send_buffer_limit,
                          metrics=self.metrics, opened_ms=opened_ms)
        stream_key = self._config.layout.room_key(grant.room)
        self._bus.subscribe(stream_key, conn)
        self.connections.add(conn)
        self._no_connections.clear()
        if self.draining:  # upgraded just before the drain began
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.write_loop)
                if self._config.auth.recheck_interval > 0:
                    tg.start_soon(self._recheck_loop, conn)
                if await self._not_kicked(conn):
                    await self._serve(conn, stream_key)
                if conn.closing:
                    # we are closing it (protocol error, slow client): let the writer finish
                    with anyio.move_on_after(self._config.server.close_timeout):
                        await conn.closed.wait()
                tg.cancel_scope.cancel()
        finally:
            self.connections.discard(conn)
            self._bus.unsubscribe(stream_key, conn)
            await self._say_goodbye(conn, stream_key)
            if not self.connections:
                self._no_connections.set()

    async def _serve(self, conn: Connection, stream_key: str) -> None:
        epoch = self._bus.epoch
        try:
            joined = await self._loader.load(conn.room)
        except YsyncError as exc:
            log.error("room %s: loading the document failed: %s", conn.room, exc)
            conn.close(1011, _unavailable(exc))
            return
        self._bus.position_at(stream_key, joined.loaded.last_id, epoch)
        conn.deliver(websocket_frame(encode_sync_step1(joined.loaded.state_vector)))
        states = [s for s in joined.loaded.awareness.values() if s.state != "null"]
        if states:
            conn.deliver(websocket_frame(encode_awareness(encode_awareness_entries(states))))
        # the loaded document waits for this client's sync step 1, but not for ever: a client
        # that never sends one must not keep a document in memory for its whole life
        pending: list[JoinDoc] = [joined]
        expiry = asyncio.get_running_loop().call_later(
            self._config.server.sync_timeout, pending.clear)
        del joined
        try:
            async for data in conn.ws:
                if isinstance(data, str):
                    raise ProtocolError("text frames are not part of the protocol")
                message = decode_message(data)
                self.metrics.messages_in.labels(type(message).__name__).inc()
                if isinstance(message, SyncStep1):
                    answer_from = pending.pop() if pending else await self._loader.load(conn.room)
                    conn.deliver(await answer_from.sync_step2(message.state_vector))
                    del answer_from  # the document is not kept after the initial sync
                elif isinstance(message, SyncUpdate | SyncStep2 | AwarenessMessage):
                    await self._on_write(conn, stream_key, data, message)
                elif isinstance(message, QueryAwareness):
                    log.debug("room %s: query-awareness ignored", conn.room)
                else:
                    log.info("room %s: dropping unexpected %s", conn.room,
                             type(message).__name__)
        except (ProtocolError, UpdateFormatError) as exc:
            log.warning("room %s: closing connection after a protocol error: %s", conn.room, exc)
            conn.close(CLOSE_PROTOCOL_ERROR, "protocol error")
        except ConnectionClosed:
            return
        finally:
            expiry.cancel()

    async def _on_write(self, conn: Connection, stream_key: str, data: bytes,
                        message: SyncUpdate | SyncStep2 | AwarenessMessage) -> None:
        if isinstance(message, AwarenessMessage):
            entries = decode_awareness(message.payload)
            if len(entries) == 1 and conn.awareness_id in (None, entries[0].client_id):
                conn.awareness_id = entries[0].client_id
                conn.awareness_clock = entries[0].clock
            if not conn.can_write:
                # a read-only client's presence stays local, but it must hear back from the
                # server or y-websocket reconnects after 30 s of silence
                conn.deliver(websocket_frame(data))
                self.metrics.messages_dropped.inc()
                return
        elif not conn.can_write or message.update == EMPTY_UPDATE:
            # read-only; or an empty update (every client answers the server's sync step 1
            # with one): storing and relaying it would change nothing any client sees
            self.metrics.messages_dropped.inc()
            return
        elif not is_valid_update(message.update):
            # a stream entry every server and worker (y-redis's too) must be able to read
            raise ProtocolError("the update does not decode")
        elif isinstance(message, SyncStep2):
            data = b"\x00\x02" + data[2:]  # stored as an update, as y-redis does
        try:
            await self._appender.append(stream_key, data)
            self.metrics.messages_appended.inc()
        except BusError as exc:
            log.error("room %s: could not store a message: %s", conn.room, exc)
            conn.close(1011, "redis unavailable")

    async def _recheck_loop(self, conn: Connection) -> None:
        """Re-asks the permission callback every ``auth.recheck_interval`` seconds."""
        while not conn.closing:
            await anyio.sleep(self._config.auth.recheck_interval)
            try:
                grant = await self._gate.recheck(conn.grant)
            except PermissionUnavailable as exc:
                log.warning("room %s: permission re-check for user %r gave no answer (%s); "
                            "keeping the access it had", conn.room, conn.grant.user_id, exc.reason)
                continue
            except AuthError as exc:
                log.info("room %s: access of user %r revoked (%s)", conn.room,
                         conn.grant.user_id, exc.reason)
                self.revoke(conn)
                return
            if grant.can_write != conn.can_write:
                log.info("room %s: user %r is now %s", conn.room, grant.user_id,
                         "read-write" if grant.can_write else "read-only")
                conn.grant = grant

    def ask_to_resync(self, among: Iterable[object] | None = None) -> int:
        """Send every connected client (of ``among`` only, if given) that may write a sync step
        1 with an empty state vector: each answers with a sync step 2 of its whole document,
        stored as an update. Returns how many were asked."""
        frame = websocket_frame(encode_sync_step1(EMPTY_STATE_VECTOR))
        asked = 0
        chosen = set(among) if among is not None else None
        for conn in list(self.connections):
            if (chosen is None or conn in chosen) and conn.can_write and not conn.closing:
                conn.deliver(frame)
                asked += 1
        return asked

    def revoke(self, conn: Connection) -> None:
        """Tell the client its permission is gone, then close it so that it does not return."""
        conn.close(CLOSE_PERMISSION_REVOKED, "permission revoked",
                   after=websocket_frame(encode_auth_denied("permission revoked")))

    def kick(self, room: str, user_id: str | None, at_ms: int | None = None) -> int:
        """Revoke every local connection of ``room`` (of ``user_id`` only, if given) opened
        before this kick reached the process (or at ``at_ms``, the kick time, if later)."""
        cutoff = max(current_time_ms(), at_ms or 0)
        return self.apply_revocations([Revocation(room, user_id, cutoff)])

    def apply_revocations(self, records: Sequence[Revocation],
                          among: Sequence[Connection] | None = None) -> int:
        """Revoke the open connections (of ``among`` only, if given) that the records revoke
        (:mod:`ysync.control`)."""
        if not records:
            return 0
        candidates = self.connections if among is None else among
        revoked = revoked_connections(records, [c for c in candidates if not c.closing])
        for conn in revoked:
            log.info("room %s: connection of user %r revoked by a kick", conn.room,
                     conn.user_id)
            self.revoke(conn)
        return len(revoked)

    async def _not_kicked(self, conn: Connection) -> bool:
        """Before a new connection is served: was it kicked while its permission was checked
        (or on a process that missed the kick)? False: it is being closed."""
        try:
            with anyio.fail_after(self._config.redis.timeout):
                records = await read_room_revocations(
                    self._client, self._config.redis.prefix, conn.room, conn.user_id)
        except (BusError, TimeoutError) as exc:
            log.error("room %s: could not check the revocation records: %s", conn.room, exc)
            conn.close(1011, "redis unavailable")
            return False
        # this connection only: looking at every open one for each new one would make a crowd
        # of connections cost the square of its size (the sweep covers the others)
        self.apply_revocations(records, among=[conn])
        return not conn.closing

    async def sweep_revocations(self) -> None:
        """Run until cancelled: every ``auth.recheck_interval`` seconds, apply the kicks
        recorded since the last sweep (a backstop for a kick the control channel lost)."""
        since: int | None = None
        while True:
            await anyio.sleep(self._config.auth.recheck_interval)
            try:
                with anyio.fail_after(self._config.redis.timeout):
                    records = await read_revocations(self._client, self._config.redis.prefix,
                                                     since)
            except (BusError, TimeoutError) as exc:
                log.warning("reading the revocation records failed: %s", exc)
                continue
            if records:
                self.apply_revocations(records)
                # a new record's time is Redis's clock when it was written: not earlier than
                # the newest seen, give or take a clock step
                since = max(r.at_ms for r in records) - SWEEP_SLACK_MS

    async def _say_goodbye(self, conn: Connection, stream_key: str) -> None:
        if conn.awareness_id is None or not conn.can_write:
            return
        message = awareness_disconnect_message(conn.awareness_id, conn.awareness_clock)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._config.redis.timeout):
            try:
                await self._appender.append(stream_key, message)
            except BusError as exc:
                log.warning("room %s: could not announce a disconnect: %s", conn.room, exc)


async def recover_lost_data(client: RedisClient, layout: Layout, bus: Bus | ShardedBus,
                            handler: SyncHandler) -> None:
    """Redis lost its data: create the worker queue again, read every room from the start of
    its new stream, and ask every connected client for its whole document, so that what the
    clients hold is in Redis again (and the worker persists it)."""
    try:
        await ensure_worker_groups(client, layout)
    except BusError as exc:  # the appender creates it again when an append needs it
        log.error("%s", exc)
    bus.restart_streams()
    asked = handler.ask_to_resync()
    log.warning("asked %d connected client(s) to send their documents again", asked)


async def _after_reconnect(client: RedisClient, marker: EpochMarker) -> None:
    """Redis answers again after an outage: check whether it lost its data, on fresh pooled
    connections (the idle ones broke with Redis, and each would fail its next command; the
    cluster client replaces a node's broken connections itself)."""
    if isinstance(client, aioredis.Redis):
        try:
            await client.connection_pool.disconnect(inuse_connections=False)
        except (redis_errors.RedisError, OSError) as exc:
            log.debug("closing broken Redis connections: %s", exc)
    marker.poke()


def _safe_path(path: str) -> str:
    return safe(path[:200])  # escaped: the path may hold ESC, CR, NUL


def _unavailable(exc: YsyncError) -> str:
    """The close reason that names what failed while loading a document."""
    if isinstance(exc, BusError):
        return "redis unavailable"
    if isinstance(exc, StorageError):
        return "storage unavailable"
    return "document unavailable"


def _redis_client(url: str, config: Config, *, blocking: bool = False) -> aioredis.Redis:
    """A pooled client, or (``blocking``) the stream reader's own client (not on a cluster:
    :mod:`ysync.cluster` makes a reader per shard)."""
    timeout = config.redis.timeout + (config.redis.read_block / 1000 if blocking else 0)
    if blocking:
        return redis_client(url, config, socket_timeout=timeout, single_connection_client=True,
                            health_check_interval=30)
    pool = redis_pool(url, config, health_check_interval=30)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


@asynccontextmanager
async def run_server(config: Config, *, storage: Storage | None = None,
                     gate: Gate | None = None) -> AsyncIterator[RunningServer]:
    """Start a complete server (embedded Redis and in-process worker as configured).

    Leaving the context stops it in order: stop accepting, close connections (1001), wait for
    them up to ``server.shutdown_timeout``, then cancel the background tasks.
    """
    async with AsyncExitStack() as stack:
        redis_url = config.redis.url
        if not redis_url:
            from ysync.embedded import EmbeddedRedis

            redis_url = await stack.enter_async_context(EmbeddedRedis(config.embedded))
        if storage is None:
            from ysync.storage.factory import open_storage

            storage = await stack.enter_async_context(open_storage(config))
        assert storage is not None
        layout = config.layout
        client: RedisClient
        if config.redis_cluster:
            client = cluster_client(redis_url, config)
        else:
            client = _redis_client(redis_url, config)
        stack.push_async_callback(client.aclose)
        try:
            await client.ping()
            if isinstance(client, RedisCluster):
                await check_cluster_layout(client, layout)
            await ensure_worker_groups(client, layout)
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
            raise BusError(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from exc
        marker = EpochMarker(client, config.redis.prefix, timeout=config.redis.timeout,
                             keys=shard_epoch_keys(layout))
        await marker.claim()
        if gate is None:
            gate = await stack.enter_async_context(open_gate(config))
        async with anyio.create_task_group() as tg:
            metrics = Metrics()
            reading: dict[str, Any] = {
                "block_ms": config.redis.read_block, "count": config.redis.read_count,
                "interval_ms": config.redis.read_interval, "metrics": metrics,
                "on_reconnect": functools.partial(_after_reconnect, client, marker)}
            bus: Bus | ShardedBus
            appender: Appender | ShardedAppender
            if isinstance(client, RedisCluster):
                nodes = ClusterNodes(client, layout, config)
                stack.push_async_callback(nodes.aclose)
                bus = ShardedBus(nodes, layout, **reading)
                appender = ShardedAppender(nodes, layout, timeout=config.redis.timeout)
            else:
                reader = _redis_client(redis_url, config, blocking=True)
                stack.push_async_callback(reader.aclose)
                bus = Bus(reader, client, **reading)
                appender = Appender(client, layout, timeout=config.redis.timeout)
            tg.start_soon(bus.run)
            loader = DocLoader(tg, client, storage, layout, metrics)
            stack.push_async_callback(appender.aclose)  # before the client closes
            tg.start_soon(appender.run)
            handler = SyncHandler(config, client, bus, loader, gate, metrics, appender,
                                  storage)
            if isinstance(bus, ShardedBus):
                bus.on_failover = handler.ask_to_resync
            tg.start_soon(listen_for_commands, client, config.redis.prefix, handler)
            if config.auth.recheck_interval > 0:
                tg.start_soon(handler.sweep_revocations)
            tg.start_soon(marker.run, functools.partial(
                recover_lost_data, client, layout, bus, handler))
            if is_sentinel_url(redis_url):
                # every connection moves to a new master at once, and as the promoted replica
                # may lack the last writes, every connected client sends its document again
                assert isinstance(client, aioredis.Redis)
                tg.start_soon(follow_master, [client, reader], functools.partial(
                    recover_lost_data, client, layout, bus, handler))
            worker_done = anyio.Event()
            worker = None
            if config.run_worker:
                from workers.compactor import Worker

                worker = Worker(client, storage, config, metrics=metrics.worker)

                async def run_worker() -> None:
                    try:
                        await worker.run()
                    finally:
                        worker_done.set()

                tg.start_soon(run_worker)

            async def drain() -> None:
                await handler.drain(config.server.drain_period)
                with anyio.move_on_after(config.redis.timeout):
                    await appender.flush()
                if worker is not None:
                    worker.stop()  # it finishes the tasks in hand; the rest stay queued
                    with anyio.move_on_after(config.server.shutdown_timeout):
                        await worker_done.wait()
                    if not worker_done.is_set():
                        log.warning("the in-process worker did not finish its tasks within "
                                    "%.1f s; they are released and retried by any worker",
                                    config.server.shutdown_timeout)

            if config.api_enabled:  # the document API, on its own port (ysync/api)
                from ysync.api import serve_api

                await tg.start(serve_api, config, client, storage, gate)
            server = await _listen(config, handler)
            try:
                port = _bound_port(server)
                log.info("ysync listening on ws://%s:%d/<room> (redis %s, storage %s)",
                         config.server.host, port, redact_url(redis_url), config.storage_kind)
                if config.serve_demo:
                    log.info("demo editor page: http://%s:%d/ (open it in two tabs; "
                             "server.demo=no turns it off)", config.server.host, port)
                yield RunningServer(port, config.server.host, redis_url, bus, loader, handler,
                                    drain)
            finally:
                server.close(close_connections=True)
                with anyio.move_on_after(config.server.shutdown_timeout) as scope:
                    await server.wait_closed()
                if scope.cancelled_caught:
                    log.warning("connections still open after %.1fs; cancelling them",
                                config.server.shutdown_timeout)
                tg.cancel_scope.cancel()


async def _listen(config: Config, handler: SyncHandler) -> Server:
    server_config = config.server
    return await serve(
        handler.handle,
        server_config.host,
        server_config.port,
        process_request=handler.process_request,
        select_subprotocol=handler.select_subprotocol,
        compression="deflate" if server_config.compression else None,
        reuse_port=server_config.reuse_port or None,
        # Timeouts
        open_timeout=server_config.close_timeout * 2,
        ping_interval=server_config.ping_interval or None,
        ping_timeout=server_config.ping_timeout,
        close_timeout=server_config.close_timeout,
        # Limits
        max_size=server_config.max_message_size,
        max_queue=16,
        write_limit=256 * 1024,
    )


def _bound_port(server: Server) -> int:
    for sock in server.sockets:
        return int(sock.getsockname()[1])
    raise YsyncError("the server is not listening on any socket")


__all__ = ["Grant", "Headers", "RunningServer", "SyncHandler", "run_server"]
