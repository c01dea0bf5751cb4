"""Operator commands that reach every ysync process through Redis pub/sub.

``ysync kick <room> [--user U]`` publishes on ``<prefix>:ysync:control``; every server process
listens there and revokes the matching local connections (auth permission-denied message, then
close code 4403, so that y-websocket does not reconnect).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Protocol
from urllib.parse import unquote

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from ysync.errors import BusError

log = logging.getLogger(__name__)


def control_channel(prefix: str) -> str:
    return f"{prefix}:ysync:control"


class Kicker(Protocol):
    def kick(self, room: str, user_id: str | None) -> int: ...


async def publish_kick(client: aioredis.Redis, prefix: str, room: str,
                       user_id: str | None) -> int:
    """Ask every server process to revoke the room's connections; returns how many processes
    received the request."""
    payload = json.dumps({"op": "kick", "room": room, "user": user_id})
    try:
        return int(await client.publish(control_channel(prefix), payload))
    except redis_errors.RedisError as exc:
        raise BusError(f"publishing a kick failed: {exc}") from exc


def room_matches(connection_room: str, requested: str) -> bool:
    """The operator may name a room as it appears in the URL or as the client named it."""
    return connection_room == requested or unquote(connection_room) == requested


async def listen_for_commands(client: aioredis.Redis, prefix: str, kicker: Kicker) -> None:
    """Run until cancelled: apply every command published on the control channel."""
    failures = 0
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(control_channel(prefix))
            failures = 0
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    _apply(message["data"], kicker)
        except (redis_errors.RedisError, OSError) as exc:
            failures += 1
            pause = min(5.0, 0.1 * math.pow(2, failures))
            log.error("control channel failed (%s); resubscribing in %.1fs", exc, pause)
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
    except ValueError as exc:
        log.warning("ignoring a malformed control message (%d bytes): %s", len(raw), exc)
        return
    kicked = kicker.kick(command["room"], user)
    log.info("kick room=%r user=%r: %d local connections closed", command["room"], user, kicked)
