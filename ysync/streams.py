"""Redis layout shared with y-redis: stream keys, stream ids, Lua scripts (docs/protocol.md).

Everything here is byte-for-byte what y-redis 0.1.6 does, so that both servers and both workers
can share one Redis. The scripts' source text is identical to y-redis's too, so they share the
same SHA1 in Redis's script cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ysync.errors import BusError

_URI_SAFE = "-_.!~*'()"
_STREAM_KEY = re.compile(r"^(.*):room:(.*):(.*)$", re.DOTALL)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_STREAM_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")

#: The doc id the WebSocket server uses for a room's main document.
INDEX_DOC = "index"


def encode_uri_component(value: str) -> str:
    """JavaScript's ``encodeURIComponent``."""
    return quote(value, safe=_URI_SAFE)


def decode_uri_component(value: str) -> str:
    """JavaScript's ``decodeURIComponent`` (invalid escapes raise ``ValueError``)."""
    bad = _BAD_ESCAPE.search(value)
    if bad is not None:  # unquote() would keep a "%" that is not followed by two hex digits
        raise ValueError(f"invalid percent escape at position {bad.start()}")
    return unquote(value, errors="strict")


def room_stream_key(prefix: str, room: str, docid: str = INDEX_DOC) -> str:
    """``<prefix>:room:<encodeURIComponent(room)>:<encodeURIComponent(docid)>``."""
    return f"{prefix}:room:{encode_uri_component(room)}:{encode_uri_component(docid)}"


def parse_room_stream_key(prefix: str, key: str) -> tuple[str, str]:
    """The (room, docid) of a stream key; ``BusError`` if it is not one of ``prefix``'s."""
    match = _STREAM_KEY.match(key)
    if match is None or match.group(1) != prefix:
        raise BusError(f"malformed room stream key {key!r} for prefix {prefix!r}")
    try:
        return decode_uri_component(match.group(2)), decode_uri_component(match.group(3))
    except ValueError as exc:
        raise BusError(f"malformed room stream key {key!r}: {exc}") from exc


def worker_stream_key(prefix: str) -> str:
    """The worker queue stream; its consumer group has the same name."""
    return f"{prefix}:worker"


@dataclass(frozen=True, slots=True, order=True)
class StreamId:
    """A Redis stream entry id ``<ms>-<seq>``, ordered as Redis orders them."""

    ms: int
    seq: int = 0

    @classmethod
    def parse(cls, raw: str | bytes) -> StreamId:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        # int() alone would also take " 1", "+1", "1_0" and a negative sequence ("1--2")
        match = _STREAM_ID.fullmatch(text)
        if match is None:
            raise BusError(f"malformed stream id {text!r}")
        return cls(int(match.group(1)), int(match.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO_ID = StreamId(0, 0)


def append_script(prefix: str) -> str:
    """y-redis's append script for ``prefix`` (the worker queue's name is part of it)."""
    worker = worker_stream_key(prefix)
    return f"""
            if redis.call("EXISTS", KEYS[1]) == 0 then
              redis.call("XADD", "{worker}", "*", "compact", KEYS[1])
              redis.call("XREADGROUP", "GROUP", "{worker}", "pending", "STREAMS", "{worker}", ">")
            end
            redis.call("XADD", KEYS[1], "*", "m", ARGV[1])
          """


DELETE_IF_EMPTY_SCRIPT = """
            if redis.call("XLEN", KEYS[1]) == 0 then
              redis.call("DEL", KEYS[1])
            end
          """


class Scripts:
    """The two y-redis Lua scripts, registered once per client (EVALSHA, EVAL on a cache miss)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._append = client.register_script(append_script(prefix))
        self._delete_if_empty = client.register_script(DELETE_IF_EMPTY_SCRIPT)

    async def append(self, stream_key: str, message: bytes) -> None:
        """Append one message to a room stream; the first one also enqueues a compaction task."""
        try:
            await self._append(keys=[stream_key], args=[message])
        except redis_errors.RedisError as exc:
            raise BusError(f"appending to {stream_key} failed: {exc}") from exc

    async def queue_append(self, pipe: Any, stream_key: str, message: bytes) -> None:
        """Queue an append in a pipeline (the pipeline loads the script if Redis lacks it)."""
        await self._append(keys=[stream_key], args=[message], client=pipe)

    def delete_if_empty(self, stream_key: str, pipe: Any = None) -> Any:
        """Delete the stream if it has no entries (in ``pipe`` if given)."""
        return self._delete_if_empty(keys=[stream_key], client=pipe)


async def ensure_worker_group(client: aioredis.Redis, prefix: str) -> None:
    """Create the worker queue and its consumer group (at id 0, MKSTREAM) unless they exist."""
    key = worker_stream_key(prefix)
    try:
        await client.xgroup_create(key, key, id="0", mkstream=True)
    except redis_errors.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise BusError(f"creating consumer group {key} failed: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise BusError(f"creating consumer group {key} failed: {exc}") from exc


async def read_whole_stream(
    client: aioredis.Redis, stream_key: str, page_size: int = 1000
) -> tuple[list[bytes], StreamId]:
    """Every ``m`` of a stream and the id of its last entry (``0-0`` for an empty stream).

    Reads in pages of ``page_size`` entries so that no single reply is unbounded.
    """
    messages: list[bytes] = []
    last = ZERO_ID
    start = "-"
    try:
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(
                stream_key, min=start, max="+", count=page_size
            )  # type: ignore[assignment]
            for entry_id, fields in entries:
                last = StreamId.parse(entry_id)
                m = fields.get(b"m")
                if m is not None:
                    messages.append(m)
            if len(entries) < page_size:
                return messages, last
            start = f"({last}"
    except redis_errors.RedisError as exc:
        raise BusError(f"reading {stream_key} failed: {exc}") from exc
