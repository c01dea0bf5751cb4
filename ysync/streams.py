"""Redis layout shared with y-redis: stream keys, stream ids, Lua scripts (docs/protocol.md).

Everything here is byte-for-byte what y-redis 0.1.6 does, so that both servers and both workers
can share one Redis. The scripts' source text is identical to y-redis's too, so they share the
same SHA1 in Redis's script cache.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

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


#: The cluster layout's append script: the same steps as y-redis's, with the room stream's
#: shard queue declared as KEYS[2] (a cluster runs a script only on keys of one slot).
CLUSTER_APPEND_SCRIPT = """
            if redis.call("EXISTS", KEYS[1]) == 0 then
              redis.call("XADD", KEYS[2], "*", "compact", KEYS[1])
              redis.call("XREADGROUP", "GROUP", KEYS[2], "pending", "STREAMS", KEYS[2], ">")
            end
            redis.call("XADD", KEYS[1], "*", "m", ARGV[1])
          """

#: Most shards of the cluster layout.
MAX_SHARDS = 1024


@lru_cache(maxsize=8)
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tags of the cluster layout's shards: shard ``i``'s tag is the first of ``"i"``,
    ``"i.1"``, ``"i.2"``, ... whose hash slot lies in ``[i * 16384 // shards, (i + 1) * 16384
    // shards)``, so the shards are spread evenly over the slots (and over masters that own
    contiguous slot ranges, as ``redis-cli --cluster create`` assigns them)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {shards}")
    tags = []
    for i in range(shards):
        low = i * REDIS_CLUSTER_HASH_SLOTS // shards
        high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        candidate, k = str(i), 0
        while not low <= key_slot(candidate.encode()) < high:
            k += 1
            candidate = f"{i}.{k}"
        tags.append(candidate)
    return tuple(tags)


class Layout:
    """Where a prefix's keys are: y-redis's layout (``shards == 0``) or the cluster layout.

    y-redis's layout is the wire contract (docs/protocol.md): room streams
    ``<prefix>:room:<room>:<docid>``, one worker queue ``<prefix>:worker``, the append script
    of :func:`append_script`, ysync's own keys ``<prefix>:ysync:<name>``.

    The cluster layout (``redis.cluster``) puts every key a script or a MULTI block touches in
    one hash slot: a room belongs to shard ``crc32(encodeURIComponent(room)) % shards``; shard
    ``i`` has the hash tag ``t = shard_tags(shards)[i]``, its room streams are
    ``<prefix>:{t}:room:<room>:<docid>`` and its worker queue ``<prefix>:{t}:worker``. ysync's
    own keys keep their names: each is used alone. y-redis does not run on a cluster.
    """

    def __init__(self, prefix: str, shards: int = 0) -> None:
        if shards and ("{" in prefix or "}" in prefix):
            raise ValueError("a cluster layout's prefix cannot hold { or }: Redis would take "
                             "them for the hash tag")
        self.prefix = prefix
        self.shards = shards
        self._tags = shard_tags(shards) if shards else ()
        self._shard_of_tag = {tag: i for i, tag in enumerate(self._tags)}
        self._tag_start = len(prefix) + 2  # after "<prefix>:{"

    @property
    def cluster(self) -> bool:
        return self.shards > 0

    def __repr__(self) -> str:
        return f"Layout({self.prefix!r}, shards={self.shards})"

    def shard_of(self, room: str) -> int:
        """The shard of a room (0 in y-redis's layout)."""
        if not self.shards:
            return 0
        return zlib.crc32(encode_uri_component(room).encode()) % self.shards

    def tag(self, shard: int) -> str:
        return self._tags[shard]

    def room_key(self, room: str, docid: str = INDEX_DOC) -> str:
        if not self.shards:
            return room_stream_key(self.prefix, room, docid)
        tag = self._tags[self.shard_of(room)]
        return (f"{self.prefix}:{{{tag}}}:room:{encode_uri_component(room)}:"
                f"{encode_uri_component(docid)}")

    def parse_room_key(self, key: str) -> tuple[str, str]:
        """The (room, docid) of a stream key; ``BusError`` if it is not one of this layout's."""
        if not self.shards:
            return parse_room_stream_key(self.prefix, key)
        shard = self.shard_of_key(key)
        tagged = f"{self.prefix}:{{{self._tags[shard]}}}"
        room, docid = parse_room_stream_key(tagged, key)
        if self.shard_of(room) != shard:
            raise BusError(f"room stream key {key!r} is not in its room's shard for {self!r}")
        return room, docid

    def shard_of_key(self, stream_key: str) -> int:
        """The shard of a room stream key, from its hash tag (no decoding: the per-message
        path asks it); ``BusError`` for a key of no shard of this layout."""
        if not self.shards:
            return 0
        end = stream_key.find("}", self._tag_start)
        shard = self._shard_of_tag.get(stream_key[self._tag_start:end]) if end > 0 else None
        if shard is None or not stream_key.startswith(f"{self.prefix}:{{"):
            raise BusError(f"malformed room stream key {stream_key!r} for {self!r}")
        return shard

    @cached_property
    def queues(self) -> tuple[str, ...]:
        """The worker queues: y-redis's one, or one per shard (index = shard)."""
        if not self.shards:
            return (worker_stream_key(self.prefix),)
        return tuple(f"{self.prefix}:{{{tag}}}:worker" for tag in self._tags)

    def queue_of(self, stream_key: str) -> str:
        """The worker queue that holds a room stream's task."""
        return self.queues[self.shard_of_key(stream_key)]

    @cached_property
    def append_script(self) -> str:
        return CLUSTER_APPEND_SCRIPT if self.shards else append_script(self.prefix)

    def append_keys(self, stream_key: str) -> list[str]:
        """The KEYS of the append script for a stream."""
        return [stream_key, self.queue_of(stream_key)] if self.shards else [stream_key]


class Scripts:
    """The append script of a layout, registered once per client (EVALSHA, EVAL on a miss)."""

    def __init__(self, client: Any, layout: Layout) -> None:
        self._layout = layout
        self._append = client.register_script(layout.append_script)

    async def append(self, stream_key: str, message: bytes) -> None:
        """Append one message to a room stream; the first one also enqueues a compaction task."""
        try:
            await self._append(keys=self._layout.append_keys(stream_key), args=[message])
        except redis_errors.RedisError as exc:
            raise BusError(f"appending to {stream_key} failed: {exc}") from exc


async def ensure_worker_group(client: Any, queue: str) -> None:
    """Create a worker queue and its consumer group (at id 0, MKSTREAM) unless they exist."""
    try:
        await client.xgroup_create(queue, queue, id="0", mkstream=True)
    except redis_errors.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise BusError(f"creating consumer group {queue} failed: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise BusError(f"creating consumer group {queue} failed: {exc}") from exc


async def ensure_worker_groups(client: Any, layout: Layout) -> None:
    """:func:`ensure_worker_group` for every worker queue of the layout."""
    for queue in layout.queues:
        await ensure_worker_group(client, queue)


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
