"""ysync.control against a real Redis: the kick script's record and message, and the reads."""

from __future__ import annotations

import json

import anyio
import pytest
import redis.asyncio as aioredis

from ysync import control
from ysync.control import (
    Revocation,
    control_channel,
    publish_kick,
    read_revocations,
    read_room_revocations,
    record_member,
    revocations_key,
)

from conftest import seconds
from harness import wait_until

pytestmark = pytest.mark.anyio


async def test_a_kick_is_recorded_and_published_with_its_time(
    client: aioredis.Redis, prefix: str
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(control_channel(prefix))
    try:
        kicked = await publish_kick(client, prefix, "my room", "mallory", window=60)
        with anyio.fail_after(seconds(5)):
            message = None
            while message is None:
                message = await pubsub.get_message(timeout=1.0)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert kicked.reached == 1
    assert json.loads(message["data"]) == {"op": "kick", "room": "my room", "user": "mallory",
                                           "at": kicked.at_ms}
    redis_now = (await client.time())[0] * 1000
    assert abs(kicked.at_ms - redis_now) < 5000, "the kick time is Redis's clock, in ms"
    assert await read_revocations(client, prefix) == [
        Revocation("my room", "mallory", kicked.at_ms)]
    assert 0 < await client.pttl(revocations_key(prefix)) <= 60_000


async def _redis_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_new_kick_moves_the_record_and_old_records_are_dropped(
    client: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = revocations_key(prefix)
    await client.zadd(key, {record_member("ancient", None): 1_000})  # long past any window
    first = await publish_kick(client, prefix, "r", None, window=60)
    await anyio.sleep(0.01)
    second = await publish_kick(client, prefix, "r", None, window=60)
    assert second.at_ms > first.at_ms
    assert await read_revocations(client, prefix) == [Revocation("r", None, second.at_ms)]

    monkeypatch.setattr(control, "MAX_RECORDS", 3)
    for i in range(5):
        # records of one millisecond tie, and the cap then drops by member order: give each
        # kick a millisecond of its own (waiting for Redis's clock, not for a guessed time)
        last = (await publish_kick(client, prefix, "r", f"u{i}", window=60)).at_ms

        async def later(after: int = last) -> bool:
            return await _redis_ms(client) > after

        await wait_until(later, 5, "Redis's clock to pass the kick", interval=0.001)
    rooms_users = [(r.room, r.user_id) for r in await read_revocations(client, prefix)]
    assert rooms_users == [("r", "u2"), ("r", "u3"), ("r", "u4")], "the oldest dropped"


async def test_reads_by_room_and_since(client: aioredis.Redis, prefix: str) -> None:
    key = revocations_key(prefix)
    await client.zadd(key, {record_member("my room", "m"): 10, record_member("my%20room", None): 20,
                            record_member("other", None): 30, "not json": 40})
    assert await read_room_revocations(client, prefix, "my%20room", "m") == [
        Revocation("my%20room", None, 20), Revocation("my room", "m", 10)]
    assert await read_room_revocations(client, prefix, "my%20room", "alice") == [
        Revocation("my%20room", None, 20)]
    assert await read_room_revocations(client, prefix, "plain", "m") == []
    assert await read_revocations(client, prefix, since_ms=20) == [
        Revocation("my%20room", None, 20), Revocation("other", None, 30)]
