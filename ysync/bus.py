"""The process-wide Redis reader: one XREAD loop over every room with local connections.

Spec section 4: each room's messages read in one XREAD are merged into at most one update
message and one awareness message, encoded once, and handed to every local connection of that
room (the sender included). A room joins the read only after its document was loaded, at the
loaded document's last stream id, so nothing between the load and the subscription is missed.
When Redis lost its data (:mod:`ysync.epoch`), :meth:`Bus.restart_streams` reads every room
again from the start of its new stream.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import Connection

from ysync.connection import websocket_frame
from ysync.errors import BusError
from ysync.metrics import Metrics
from ysync.protocol import merge_stream_messages
from ysync.redis_clients import is_redis_failure
from ysync.streams import ZERO_ID, StreamId

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """A local connection: takes a WebSocket frame to send, without blocking."""

    def deliver(self, frame: bytes) -> None: ...


@dataclass(slots=True)
class RoomSubscription:
    """The local connections of one room stream and where the reader is in that stream.

    ``position`` is ``None`` until the first local connection loaded the document.
    ``rewind_to`` is set when a later join loaded an older state than ``position``: the next
    read result must not move ``position`` past it.
    """

    receivers: set[Receiver] = field(default_factory=set)
    position: StreamId | None = None
    rewind_to: StreamId | None = None
    key_arg: bytes = b""  # the stream key as an encoded command argument
    position_arg: bytes = b""  # the position as an encoded command argument

    def move_to(self, position: StreamId, raw: bytes | None = None) -> None:
        self.position = position
        self.position_arg = _bulk(raw if raw is not None else str(position).encode())


def _bulk(value: bytes) -> bytes:
    """One argument of a Redis command in the protocol's encoding (a bulk string)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _stream_entries(reply: object) -> list[tuple[bytes, list[Any]]]:
    """(stream key, entries) of an XREAD reply, RESP2 (list) or RESP3 (map); [] for none."""
    if reply is None:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    if isinstance(reply, list):
        return [(item[0], item[1]) for item in reply]
    raise BusError(f"unexpected XREAD reply of type {type(reply).__name__}")


def _m_field(fields: list[bytes]) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"m":
            return fields[i + 1]
    return None


class Bus:
    """Reads every locally subscribed room stream with one blocking XREAD at a time."""

    def __init__(self, reader: aioredis.Redis, control: aioredis.Redis, *,
                 block_ms: int = 1000, count: int = 1000, interval_ms: float = 0.0,
                 metrics: Metrics | None = None,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 relocate: Callable[[BaseException],
                                    Awaitable[tuple[aioredis.Redis, aioredis.Redis]]]
                 | None = None) -> None:
        """``reader`` must be a single-connection client used by nothing else (it blocks);
        ``control`` is a client of the same Redis, used to interrupt a blocked read.
        ``on_reconnect`` is awaited when Redis answers again after a failed read, before the
        next read. ``relocate`` (a Redis Cluster: :mod:`ysync.cluster`) is awaited with the
        error of a failed read and returns the ``reader`` and ``control`` of the node that owns the
        streams now (after a redirect or a failover)."""
        self._reader = reader
        self._connection: Connection | None = None
        self._read_head = (_bulk(b"XREAD") + _bulk(b"COUNT") + _bulk(str(count).encode())
                           + _bulk(b"BLOCK") + _bulk(str(block_ms).encode()) + _bulk(b"STREAMS"))
        self._control = control
        self._block_ms = block_ms
        self._count = count
        self._rooms: dict[str, RoomSubscription] = {}
        self._changed = anyio.Event()
        self._reader_id: int | None = None
        self._generation = 0  # bumped whenever a room starts being read
        self._reading_generation: int | None = None  # generation of the XREAD in flight
        self._metrics = metrics
        self._interval = interval_ms / 1000
        self._last_read = 0.0
        self._on_reconnect = on_reconnect
        self._relocate = relocate
        self._recovering = False  # a read failed; Redis has not answered since
        self._epoch = 0  # bumped by restart_streams

    @property
    def rooms(self) -> dict[str, RoomSubscription]:
        return self._rooms

    def subscribe(self, stream_key: str, receiver: Receiver) -> RoomSubscription:
        """Add a receiver to a room; it gets messages once the room is positioned."""
        room = self._rooms.get(stream_key)
        if room is None:
            room = self._rooms[stream_key] = RoomSubscription(key_arg=_bulk(stream_key.encode()))
        room.receivers.add(receiver)
        return room

    def unsubscribe(self, stream_key: str, receiver: Receiver) -> None:
        room = self._rooms.get(stream_key)
        if room is None:
            return
        room.receivers.discard(receiver)
        if not room.receivers:
            del self._rooms[stream_key]

    @property
    def epoch(self) -> int:
        """Changes whenever :meth:`restart_streams` is called."""
        return self._epoch

    def position_at(self, stream_key: str, loaded_last_id: StreamId,
                    epoch: int | None = None) -> None:
        """Called after a join loaded the document up to ``loaded_last_id``.

        A room not yet read starts there; a room read past it goes back to it (re-delivering a
        few messages is harmless, missing one is not). ``epoch``: :attr:`epoch` before the
        load; if the streams were restarted since, the load may have read the lost streams,
        and the room is read from the start of its new stream instead.
        """
        room = self._rooms.get(stream_key)
        if room is None:
            return
        if epoch is not None and epoch != self._epoch:
            loaded_last_id = ZERO_ID
        if room.position is None:
            room.move_to(loaded_last_id)
            self._wake()
        elif loaded_last_id < room.position:
            room.move_to(loaded_last_id)
            room.rewind_to = loaded_last_id

    def restart_streams(self) -> None:
        """Read every room from the start of its stream: Redis lost its data, so the ids read
        so far belong to streams that no longer exist, and a new stream's ids may be lower
        (another server's clock). A read in flight does not move a room past the start."""
        self._epoch += 1
        for room in self._rooms.values():
            if room.position is not None:
                room.move_to(ZERO_ID)
                room.rewind_to = ZERO_ID
        self._wake()  # interrupt a blocked read of the old positions

    def _wake(self) -> None:
        self._generation += 1
        self._changed.set()

    async def run(self) -> None:
        """Read until cancelled. Redis errors are logged and retried with a growing pause."""
        failures = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._unblocker)
            while True:
                try:
                    await self._read_once()
                    failures = 0
                except Exception as exc:  # the reader must outlive any failure: retried
                    failures += 1
                    pause = min(5.0, 0.1 * math.pow(2, failures))
                    log.error("reading room streams failed (%s); retrying in %.1fs", exc, pause,
                              exc_info=not is_redis_failure(exc))
                    self._reader_id = None
                    self._recovering = True
                    await anyio.sleep(pause)
                    if self._relocate is not None:
                        await self._move(exc)

    async def _move(self, failure: BaseException) -> None:
        """Read from the node :attr:`_relocate` names (a failure is retried on the next one)."""
        assert self._relocate is not None
        try:
            reader, control = await self._relocate(failure)
        except (redis_errors.RedisError, OSError, BusError) as exc:
            log.error("finding the node of the room streams failed: %s", exc)
            return
        if reader is not self._reader:
            connection, self._connection = self._connection, None
            if connection is not None:
                with anyio.CancelScope(shield=True):
                    await connection.disconnect()
            self._reader, self._control = reader, control

    async def _unblocker(self) -> None:
        """Interrupts a blocked XREAD (CLIENT UNBLOCK) that does not read a newly added room."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            reading = self._reading_generation
            if reading is not None and reading < self._generation and self._reader_id is not None:
                try:
                    await self._control.client_unblock(self._reader_id)
                except redis_errors.RedisError as exc:
                    log.warning("could not interrupt the stream reader: %s", exc)

    async def _command(self, args: bytes, count: int) -> object:
        """Send one command (``count`` encoded arguments) on the reader's own connection."""
        connection = self._connection
        assert connection is not None
        try:
            await connection.send_packed_command(b"*%d\r\n" % count + args, check_health=False)
            return await connection.read_response()
        except BaseException:
            # a failed, timed out or cancelled command leaves the connection in an unknown
            # state: drop it, a new one is made for the next read
            with anyio.CancelScope(shield=True):
                await connection.disconnect()
            self._reader_id = None
            raise

    async def _read_once(self) -> None:
        if self._connection is None:
            self._connection = await self._reader.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        if self._reader_id is None:
            reader_id = await self._command(_bulk(b"CLIENT") + _bulk(b"ID"), 2)
            if not isinstance(reader_id, int):
                raise BusError(f"CLIENT ID answered {reader_id!r}")
            self._reader_id = reader_id
            if self._recovering:
                self._recovering = False
                log.info("reading room streams again")
                if self._on_reconnect is not None:
                    await self._on_reconnect()
        wait = self._last_read + self._interval - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)  # let more messages gather: fewer, fuller reads
        generation = self._generation
        keys: list[bytes] = []
        ids: list[bytes] = []
        for subscription in self._rooms.values():
            if subscription.position is not None:
                keys.append(subscription.key_arg)
                ids.append(subscription.position_arg)
                subscription.rewind_to = None
        if not keys:
            with anyio.move_on_after(self._block_ms / 1000):
                await self._changed.wait()
            return
        self._last_read = time.monotonic()
        self._reading_generation = generation
        try:
            # the command is assembled from arguments encoded once per room and position:
            # encoding XREAD's arguments for every room on every read was the bus's largest
            # cost with many rooms
            reply = _stream_entries(await self._command(
                b"".join((self._read_head, *keys, *ids)), 6 + 2 * len(keys)))
        finally:
            self._reading_generation = None
        if not reply:
            return
        if self._metrics is not None:
            self._metrics.read_batches.inc()
        for raw_key, entries in reply:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            room = self._rooms.get(key)
            if room is None or not entries:
                continue
            rewound = room.rewind_to is not None
            if room.rewind_to is not None:
                room.move_to(room.rewind_to)
                room.rewind_to = None
            else:
                room.move_to(StreamId.parse(entries[-1][0]), entries[-1][0])
            messages = [m for _id, fields in entries if (m := _m_field(fields)) is not None]
            if not messages:
                continue
            merged = merge_stream_messages(messages)
            if merged.skipped:
                log.warning("%s: skipped %d malformed stream entries", key, merged.skipped)
            for message in (merged.update, merged.awareness):
                if message is None:
                    continue
                frame = websocket_frame(message)  # one frame for every client of the room
                for receiver in list(room.receivers):
                    receiver.deliver(frame)
                if self._metrics is not None:
                    self._metrics.frames_out.inc(len(room.receivers))
                    self._metrics.bytes_out.inc(len(room.receivers) * len(frame))
            if self._metrics is not None and not rewound:  # a rewind re-sends old entries
                oldest_ms = StreamId.parse(entries[0][0]).ms
                self._metrics.fanout_delay_seconds.observe(
                    max(0.0, time.time() - oldest_ms / 1000))
