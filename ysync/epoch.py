"""Noticing that Redis lost its data: the epoch marker of a prefix.

A Redis without persistence that restarts, a ``FLUSHALL``, or a failover to an empty replica
takes every room stream with it, while clients stay connected and hold what they wrote. To
notice, every server keeps a marker ``<prefix>:ysync:epoch`` holding a random token: the first
process on a prefix writes it (``SET NX``), the others adopt it, and each process checks it
every few seconds and whenever its stream reader reconnects after a Redis error. A marker that
is gone or holds another token means the data this process knew is gone: the marker is written
again and the server asks every connected client to send its document again
(:func:`ysync.server.recover_lost_data`). y-redis ignores keys it does not know.

On a Redis Cluster each shard has a marker in its own slot (:func:`shard_epoch_keys`), so a
master that restarts empty is noticed whichever shards it holds.
"""

from __future__ import annotations

import enum
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence

import anyio
import redis.exceptions as redis_errors

from ysync.errors import BusError
from ysync.redis_clients import RedisClient, is_redis_failure
from ysync.streams import Layout

log = logging.getLogger(__name__)

#: Seconds between two checks of the marker while Redis answers (one GET each).
CHECK_INTERVAL = 5.0

# Writes the marker unless it exists, and returns what it holds (one round trip, atomic, and
# Redis 6.2 has no SET NX GET).
_CLAIM_SCRIPT = """
redis.call("SET", KEYS[1], ARGV[1], "NX")
return redis.call("GET", KEYS[1])
"""


def epoch_key(prefix: str) -> str:
    """The marker of a prefix."""
    return f"{prefix}:ysync:epoch"


class MarkerState(enum.Enum):
    """What a check of the marker found, compared with the token this process adopted."""

    INTACT = "intact"
    GONE = "gone"  # Redis restarted empty or was flushed, and no process wrote it again yet
    REPLACED = "replaced"  # another process (or a new one) wrote it again after a loss

    @property
    def lost_data(self) -> bool:
        return self is not MarkerState.INTACT


def judge_marker(known: bytes, found: bytes | None) -> MarkerState:
    """The state of the marker that holds ``found`` (``None``: missing) for a process that
    adopted the token ``known``."""
    if found is None:
        return MarkerState.GONE
    return MarkerState.INTACT if found == known else MarkerState.REPLACED


def shard_epoch_keys(layout: Layout) -> list[str]:
    """The markers of a prefix: one, or on a Redis Cluster one per shard, in the shard's slot
    (``<prefix>:{tag}:ysync:epoch``), so that a master that lost its data is noticed whichever
    slots it owns."""
    if not layout.cluster:
        return [epoch_key(layout.prefix)]
    return [f"{layout.prefix}:{{{layout.tag(i)}}}:ysync:epoch" for i in range(layout.shards)]


class EpochMarker:
    """The marker(s) of one prefix as one process sees them (``keys``: by default the one of
    :func:`epoch_key`; on a cluster those of :func:`shard_epoch_keys`).

    :meth:`claim` once at start-up, then :meth:`run` in the server's task group; :meth:`poke`
    asks for a check at once (the stream reader calls it when it reconnects).
    """

    def __init__(self, client: RedisClient, prefix: str, *, timeout: float,
                 interval: float = CHECK_INTERVAL, keys: Sequence[str] | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._keys = list(keys) if keys is not None else [epoch_key(prefix)]
        self._timeout = timeout
        self._interval = interval
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._known: dict[str, bytes] = {}
        self._poked = anyio.Event()
        #: how many times this process found that Redis lost its data
        self.losses = 0

    @property
    def key(self) -> str:
        """The (first) marker's key."""
        return self._keys[0]

    async def claim(self, keys: Sequence[str] | None = None) -> bytes:
        """Write the markers (``keys``: these only) unless they exist; adopt the tokens they
        hold; return the first. Raises BusError."""
        token = uuid.uuid4().hex
        first = b""
        for key in keys if keys is not None else self._keys:
            try:
                with anyio.fail_after(self._timeout):
                    found = await self._claim(keys=[key], args=[token])
            except TimeoutError as exc:
                raise BusError(f"writing {key}: no answer from Redis within "
                               f"{self._timeout} s") from exc
            except redis_errors.RedisError as exc:
                raise BusError(f"writing {key} failed: {exc}") from exc
            if not isinstance(found, bytes):
                raise BusError(f"writing {key}: Redis answered {found!r}")
            self._known[key] = found
            first = first or found
        return first

    def poke(self) -> None:
        """Check the marker as soon as possible (never blocks)."""
        self._poked.set()

    async def check(self) -> MarkerState:
        """Read the marker once; if Redis lost its data, write the marker again (adopting the
        new token) and return how it was found. Raises BusError."""
        unknown = [key for key in self._keys if key not in self._known]
        if unknown:
            await self.claim(unknown)
            return MarkerState.INTACT
        try:
            with anyio.fail_after(self._timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in self._keys:  # a cluster's pipeline: one batch per node
                        pipe.get(key)
                    found_all = await pipe.execute()
        except TimeoutError as exc:
            raise BusError(f"reading {self.key}: no answer from Redis within "
                           f"{self._timeout} s") from exc
        except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
            raise BusError(f"reading {self.key} failed: {exc}") from exc
        lost: list[tuple[str, MarkerState]] = []
        for key, found in zip(self._keys, found_all, strict=True):
            if found is not None and not isinstance(found, bytes):
                raise BusError(f"reading {key}: Redis answered {found!r}")
            state = judge_marker(self._known[key], found)
            if state.lost_data:
                lost.append((key, state))
        if not lost:
            return MarkerState.INTACT
        self.losses += 1
        log.error("Redis lost the data of prefix %r: the marker %s is %s%s (Redis restarted "
                  "without persistence, was flushed, or failed over to an empty replica); "
                  "asking every connected client to send its document again",
                  self._prefix, lost[0][0], lost[0][1].value,
                  f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
        await self.claim([key for key, _state in lost])
        return lost[0][1]

    async def run(self, on_loss: Callable[[], Awaitable[None]]) -> None:
        """Check every ``interval`` seconds and when poked, until cancelled; await ``on_loss``
        after each check that found the data lost. A failed check is retried sooner."""
        failures = 0
        while True:
            wait = self._interval if not failures else min(
                self._interval, 0.1 * math.pow(2, failures))
            with anyio.move_on_after(wait):
                await self._poked.wait()
            self._poked = anyio.Event()
            try:
                state = await self.check()
            except Exception as exc:  # the checks must outlive any failure: retried
                failures += 1
                if failures == 1 or not is_redis_failure(exc):  # the reader logs outages
                    log.warning("checking the epoch marker failed (%s); retrying", exc,
                                exc_info=not is_redis_failure(exc))
                continue
            failures = 0
            if state.lost_data:
                await on_loss()
