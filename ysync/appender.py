"""Appending client messages to room streams, many per Redis round trip.

Every client message that changes state is appended with y-redis's Lua script. Sending one
EVALSHA per message would cost one round trip and one pooled connection each; instead the
messages that arrive while a batch is in flight are sent together as the next batch. A
connection awaits its own append before reading its next message, so each client's messages
keep their order, and the number waiting is bounded by the number of connections.

A batch is one write of pre-encoded ``EVALSHA`` commands on the appender's own connection and
one read of their replies, as the stream reader does (:mod:`ysync.bus`): redis-py's pipeline
objects, per-command timeouts and pool round trips cost more than the appends themselves (a
profile of many writers put a sixth of the server's time there). A script Redis does not
know (``NOSCRIPT``: restarted, flushed) is loaded and the appends it refused are sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ysync.errors import BusError
from ysync.redis_clients import is_redis_failure
from ysync.streams import Layout, ensure_worker_group

log = logging.getLogger(__name__)

#: Appends sent in one pipeline at most.
MAX_BATCH = 512


class Appender:
    """Batches appends into pipelines; :meth:`run` must be running (in the server's task group).

    ``layout``: where the keys are. In the cluster layout an appender serves one shard, whose
    worker queue ``queue`` is the script's second key (:class:`ysync.cluster.ShardAppender`).
    """

    def __init__(self, client: aioredis.Redis, layout: Layout, *, timeout: float,
                 queue: str | None = None) -> None:
        self._client = client
        self._layout = layout
        self._script = layout.append_script
        sha = hashlib.sha1(self._script.encode()).hexdigest().encode()
        self._queue = queue or layout.queues[0]
        if layout.cluster:
            if queue is None:
                raise ValueError("an appender of the cluster layout serves one shard's queue")
            # EVALSHA <sha> 2 <key> <queue> <message>: the queue goes after each key
            self._head = b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n$1\r\n2\r\n"
            self._after_key = b"\r\n" + _bulk(queue.encode())[:-2]
        else:
            #: EVALSHA <sha> 1: the part of every append's command before its key and message
            self._head = b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n$1\r\n1\r\n"
            self._after_key = b""
        self._connection: Any = None
        self._timeout = timeout
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._wakeup = anyio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False

    async def flush(self) -> None:
        """Return once every append asked for so far has been sent (or failed)."""
        while self._pending or not self._idle.is_set():
            await self._idle.wait()
            if self._pending:
                await asyncio.sleep(0.01)  # run() takes them next

    async def append(self, stream_key: str, message: bytes) -> None:
        """Append one message to a room stream; raises BusError if Redis refused or failed,
        or if :meth:`run` has ended (the server is stopping)."""
        if self._stopped:
            raise BusError("the server is stopping: nothing more is appended")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((stream_key, message, done))
        self._wakeup.set()
        await done

    async def run(self) -> None:
        """Send the appends until cancelled; then fail those that were not sent (their
        connections are told, instead of waiting for ever)."""
        batch: list[tuple[str, bytes, asyncio.Future[None]]] = []
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                self._idle.clear()
                try:
                    while self._pending:
                        batch = self._pending[:MAX_BATCH]
                        del self._pending[:MAX_BATCH]
                        await self._send(batch)
                        batch = []
                finally:
                    self._idle.set()
        finally:
            self._stopped = True
            unsent, self._pending = batch + self._pending, []
            for _key, _message, done in unsent:
                if not done.done():
                    done.set_exception(BusError("the server stopped before this message was "
                                                "appended"))

    async def _send(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        results = await self._execute(batch)
        if any(_lost_worker_group(r) for r in results):
            # Redis lost the worker queue (restarted without its data, or flushed): the
            # script's XREADGROUP fails for every new stream until the group exists again
            log.warning("the worker queue's consumer group is gone; creating it again")
            try:
                await ensure_worker_group(self._client, self._queue)
            except BusError as exc:
                log.error("%s", exc)
            else:
                again = [i for i, r in enumerate(results) if _lost_worker_group(r)]
                retried = await self._execute([batch[i] for i in again])
                for i, result in zip(again, retried, strict=True):
                    results[i] = result
        for (stream_key, _message, done), result in zip(batch, results, strict=True):
            if done.done():
                continue  # the connection went away meanwhile
            if isinstance(result, BaseException):
                done.set_exception(BusError(f"appending to {stream_key} failed: {result}"))
            else:
                done.set_result(None)

    async def _execute(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]
                       ) -> list[object]:
        """One batch of appends: one result (or exception) per append."""
        try:
            with anyio.fail_after(self._timeout):
                results = await self._round_trip(batch)
                unknown = [i for i, r in enumerate(results) if _no_script(r)]
                if unknown:
                    await self._client.script_load(self._script)
                    retried = await self._round_trip([batch[i] for i in unknown])
                    for i, result in zip(unknown, retried, strict=True):
                        results[i] = result
                return results
        except Exception as exc:  # each append fails with it; the appender goes on
            log.error("appending %d messages failed: %s", len(batch), exc,
                      exc_info=not is_redis_failure(exc))
            return [exc] * len(batch)

    async def _round_trip(self, batch: list[tuple[str, bytes, asyncio.Future[None]]]
                          ) -> list[object]:
        """Send the batch's EVALSHAs in one write and read their replies."""
        if self._connection is None:
            pool = self._client.connection_pool
            self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        connection = self._connection
        head, after_key = self._head, self._after_key
        parts: list[bytes] = []
        for stream_key, message, _done in batch:
            key = stream_key.encode()
            parts += (head, b"$%d\r\n" % len(key), key, after_key,
                      b"\r\n$%d\r\n" % len(message), message, b"\r\n")
        command = b"".join(parts)
        try:
            return await _send_and_read(connection, command, len(batch))
        except (redis_errors.ConnectionError, OSError) as exc:
            # the connection broke while idle (Redis restarted, a proxy cut it): try once on a
            # new one, as redis-py's own retry does. Appending an update or an awareness
            # message twice changes nothing a client sees.
            log.debug("appender connection broke (%s); sending again", exc)
        return await _send_and_read(connection, command, len(batch))

    async def aclose(self) -> None:
        """Give the appender's connection back to the pool."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self._client.connection_pool.release(connection)


async def _send_and_read(connection: Any, command: bytes, replies: int) -> list[object]:
    """Write ``command`` and read ``replies`` replies (an error reply is returned as its
    exception: the connection stays in step). Any failure closes the connection, whose state
    is then unknown; it connects again on the next send."""
    try:
        await connection.send_packed_command(command, check_health=False)
        results: list[object] = []
        for _ in range(replies):
            try:
                results.append(await connection.read_response())
            except redis_errors.ResponseError as exc:  # this append's reply: go on
                results.append(exc)
        return results
    except BaseException:
        with anyio.CancelScope(shield=True):
            await connection.disconnect()
        raise


def _no_script(result: object) -> bool:
    return isinstance(result, redis_errors.NoScriptError) or (
        isinstance(result, redis_errors.ResponseError) and str(result).startswith("NOSCRIPT"))


def _lost_worker_group(result: object) -> bool:
    return isinstance(result, redis_errors.ResponseError) and "NOGROUP" in str(result)


def _bulk(value: bytes) -> bytes:
    """One command argument in the protocol's encoding (a bulk string)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)
