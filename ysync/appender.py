"""Appending client messages to room streams, many per Redis round trip.

Every client message that changes state is appended with y-redis's Lua script. Sending one
EVALSHA per message would cost one round trip and one pooled connection each; instead the
messages that arrive while a batch is in flight are sent together as the next pipeline. A
connection awaits its own append before reading its next message, so each client's messages
keep their order, and the number waiting is bounded by the number of connections.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ysync.errors import BusError
from ysync.streams import Scripts, ensure_worker_group

log = logging.getLogger(__name__)

#: Appends sent in one pipeline at most.
MAX_BATCH = 512


class Appender:
    """Batches appends into pipelines; :meth:`run` must be running (in the server's task group)."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, timeout: float) -> None:
        self._client = client
        self._prefix = prefix
        self._scripts = Scripts(client, prefix)
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
                await ensure_worker_group(self._client, self._prefix)
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
        """One pipeline of appends: one result (or exception) per append."""
        try:
            with anyio.fail_after(self._timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for stream_key, message, _done in batch:
                        await self._scripts.queue_append(pipe, stream_key, message)
                    return list(await pipe.execute(raise_on_error=False))
        except (redis_errors.RedisError, OSError, TimeoutError) as exc:
            log.error("appending %d messages failed: %s", len(batch), exc)
            return [exc] * len(batch)


def _lost_worker_group(result: object) -> bool:
    return isinstance(result, redis_errors.ResponseError) and "NOGROUP" in str(result)
