"""Operator commands that reach every ysync process: ``ysync kick`` and revocation records.

``ysync kick <room> [--user U]`` does two things in one atomic Redis script: it writes a
revocation record ``(room, user or everyone, kick time)`` into the sorted set
``<prefix>:ysync:revoked`` (member: the JSON ``[room, user]``, score: the kick time in ms on
Redis's clock), and it publishes the kick on ``<prefix>:ysync:control`` for immediacy.

A record revokes a connection when the room matches (as in the URL or as the client named it),
the user matches (or the record is for everyone), and the connection was opened at or before
the kick time (:func:`revoked_connections`). Connections opened after a kick are not affected:
a kick ends sessions; whether a user may come back is the permission callback's decision.
Revoked connections get the auth message "permission denied", then close code 4403, so that
y-websocket does not reconnect.

Every server applies the records: to a connection right after it opened (a kick that came while
its permission was being checked), after its control subscription was (re)established (a kick
published while the process was cut off from Redis is never delivered to it), and, with
``auth.recheck_interval`` set, at that interval. Records live ``auth.kick_window`` seconds
(at most :data:`MAX_RECORDS` of them, the oldest dropped first); y-redis ignores the key.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import unquote

import anyio
import redis.exceptions as redis_errors

from ysync.errors import BusError
from ysync.redis_clients import RedisClient, is_redis_failure

log = logging.getLogger(__name__)

#: Most revocation records kept per prefix; a kick beyond it drops the oldest records.
MAX_RECORDS = 10_000

# KEYS[1] records; ARGV: member, window ms, most records, message without the time, channel (not
# a key: on a Redis Cluster a script's keys must share a slot, and PUBLISH reaches every node).
# Returns {kick time ms, processes that received the message (on a cluster: those on this node)}.
_KICK_SCRIPT = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call("ZADD", KEYS[1], now, ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. string.format("%d", now - window))
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call("PEXPIRE", KEYS[1], window)
-- ARGV[4] is a JSON object: its closing brace becomes the kick time and a brace
local message = string.sub(ARGV[4], 1, -2) .. ',"at":' .. string.format("%d", now) .. "}"
return {now, redis.call("PUBLISH", ARGV[5], message)}
"""


def control_channel(prefix: str) -> str:
    return f"{prefix}:ysync:control"


def revocations_key(prefix: str) -> str:
    """The sorted set of a prefix's revocation records."""
    return f"{prefix}:ysync:revoked"


@dataclass(frozen=True, slots=True)
class Revocation:
    """A kick: connections of ``room`` (of ``user_id`` only, unless ``None``) opened at or
    before ``at_ms`` (ms since the epoch) are revoked."""

    room: str
    user_id: str | None
    at_ms: int


class Revocable(Protocol):
    """What a record is matched against: a connection's room (undecoded), user and the time
    its upgrade request arrived (ms since the epoch)."""

    @property
    def room(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def opened_ms(self) -> int: ...


C = TypeVar("C", bound=Revocable)


def room_matches(connection_room: str, requested: str) -> bool:
    """The operator may name a room as it appears in the URL or as the client named it."""
    return connection_room == requested or unquote(connection_room) == requested


def revokes(record: Revocation, conn: Revocable) -> bool:
    """Whether ``record`` revokes ``conn``."""
    return (room_matches(conn.room, record.room)
            and (record.user_id is None or record.user_id == conn.user_id)
            and conn.opened_ms <= record.at_ms)


def revoked_connections(records: Iterable[Revocation], connections: Iterable[C]) -> list[C]:
    """The connections that any of ``records`` revokes, each once, in the order given
    (time linear in records plus connections)."""
    by_room: dict[str, list[Revocation]] = {}
    for record in records:
        by_room.setdefault(record.room, []).append(record)
    revoked: list[C] = []
    for conn in connections:
        names = {conn.room, unquote(conn.room)}
        if any(revokes(record, conn) for name in names for record in by_room.get(name, ())):
            revoked.append(conn)
    return revoked


def record_member(room: str, user_id: str | None) -> str:
    """The sorted-set member of a record: one per room and user (a new kick moves its time)."""
    return json.dumps([room, user_id], separators=(",", ":"))


def parse_record(member: bytes | str, score: float) -> Revocation | None:
    """A record read from Redis, or ``None`` (logged) if it is not one of ours."""
    try:
        decoded = json.loads(member)
        if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[0], str)
                and (decoded[1] is None or isinstance(decoded[1], str))):
            raise ValueError("not [room, user]")
        room, user_id = decoded
    except ValueError as exc:
        log.warning("ignoring a malformed revocation record (%d bytes): %s", len(member), exc)
        return None
    return Revocation(room, user_id, int(score))


@dataclass(frozen=True, slots=True)
class KickResult:
    at_ms: int  # the kick time, on Redis's clock
    reached: int  # processes subscribed to the control channel at that moment


async def publish_kick(client: RedisClient, prefix: str, room: str, user_id: str | None,
                       *, window: float) -> KickResult:
    """Record the kick for ``window`` seconds and tell every server process at once."""
    message = json.dumps({"op": "kick", "room": room, "user": user_id})
    try:
        at_ms, reached = await client.eval(
            _KICK_SCRIPT, 1, revocations_key(prefix), record_member(room, user_id),
            max(1, int(window * 1000)), MAX_RECORDS, message, control_channel(prefix))
    except redis_errors.RedisError as exc:
        raise BusError(f"publishing a kick failed: {exc}") from exc
    return KickResult(int(at_ms), int(reached))


async def read_revocations(client: RedisClient, prefix: str,
                           since_ms: int | None = None) -> list[Revocation]:
    """The records of the prefix (at most :data:`MAX_RECORDS`), only those of kicks at or
    after ``since_ms`` if given. Raises BusError."""
    try:
        found: Sequence[tuple[bytes, float]] = await client.zrangebyscore(  # type: ignore[assignment]
            revocations_key(prefix), "-inf" if since_ms is None else since_ms, "+inf",
            start=0, num=MAX_RECORDS, withscores=True)
    except redis_errors.RedisError as exc:
        raise BusError(f"reading the revocation records failed: {exc}") from exc
    records = (parse_record(member, score) for member, score in found)
    return [record for record in records if record is not None]


async def read_room_revocations(client: RedisClient, prefix: str, room: str,
                                user_id: str) -> list[Revocation]:
    """The records that can concern a connection of ``room`` and ``user_id`` (one round trip).
    Raises BusError."""
    wanted = [(name, user) for name in dict.fromkeys((room, unquote(room)))
              for user in (user_id, None)]
    try:
        async with client.pipeline(transaction=False) as pipe:
            for name, user in wanted:
                pipe.zscore(revocations_key(prefix), record_member(name, user))
            scores = await pipe.execute()
    except redis_errors.RedisError as exc:
        raise BusError(f"reading the revocation records failed: {exc}") from exc
    return [Revocation(name, user, int(score))
            for (name, user), score in zip(wanted, scores, strict=True) if score is not None]


class Kicker(Protocol):
    def kick(self, room: str, user_id: str | None, at_ms: int | None) -> int:
        """Revoke the local connections of a kick published at ``at_ms`` (None: unknown)."""
        ...

    def apply_revocations(self, records: Sequence[Revocation]) -> int:
        """Revoke the local connections the records revoke; returns how many."""
        ...


async def apply_recorded(client: RedisClient, prefix: str, kicker: Kicker) -> int:
    """Read every record and apply it to the local connections. Raises BusError."""
    records = await read_revocations(client, prefix)
    return kicker.apply_revocations(records) if records else 0


async def listen_for_commands(client: RedisClient, prefix: str, kicker: Kicker) -> None:
    """Run until cancelled: apply every command published on the control channel. After each
    (re)subscription, the records are applied too: kicks published while this process was not
    subscribed reach it that way."""
    failures = 0
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(control_channel(prefix))
            # subscribed first, then read: a kick is either delivered or already recorded
            revoked = await apply_recorded(client, prefix, kicker)
            if failures:
                log.info("control channel subscribed again; %d connection(s) revoked by kicks "
                         "recorded meanwhile", revoked)
            failures = 0
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    _apply(message["data"], kicker)
        except Exception as exc:  # the listener must outlive any failure: resubscribed
            failures += 1
            pause = min(5.0, 0.1 * math.pow(2, failures))
            log.error("control channel failed (%s); resubscribing in %.1fs", exc, pause,
                      exc_info=not is_redis_failure(exc))
            await anyio.sleep(pause)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _apply(raw: bytes, kicker: Kicker) -> None:
    try:
        command = json.loads(raw)
        if command.get("op") != "kick" or not isinstance(command.get("room"), str):
            raise ValueError("not a kick command")
        user = command.get("user")
        if user is not None and not isinstance(user, str):
            raise ValueError("user is not a string")
        at_ms = command.get("at")
        if at_ms is not None and not isinstance(at_ms, int):
            raise ValueError("at is not an integer")
    except (ValueError, AttributeError) as exc:
        log.warning("ignoring a malformed control message (%d bytes): %s", len(raw), exc)
        return
    kicked = kicker.kick(command["room"], user, at_ms)
    log.info("kick room=%r user=%r: %d local connections closed", command["room"], user, kicked)
