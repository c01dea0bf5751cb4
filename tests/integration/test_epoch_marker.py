"""The epoch marker and the stream reader's restart against a real Redis (in-process)."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from ysync.bus import Bus
from ysync.epoch import EpochMarker, MarkerState, epoch_key
from ysync.streams import StreamId, room_stream_key

from conftest import seconds

pytestmark = [pytest.mark.anyio]


async def test_processes_share_one_marker_and_each_notices_a_loss_once(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        first = EpochMarker(client, prefix, timeout=5)
        second = EpochMarker(client, prefix, timeout=5)
        token = await first.claim()
        assert await second.claim() == token  # the second process adopts the first one's
        assert await client.get(epoch_key(prefix)) == token
        assert await first.check() is MarkerState.INTACT

        await client.delete(epoch_key(prefix))  # what a restart without persistence does
        assert await first.check() is MarkerState.GONE
        written = await client.get(epoch_key(prefix))
        assert written is not None and written != token
        assert await first.check() is MarkerState.INTACT  # once per loss
        assert await second.check() is MarkerState.REPLACED  # the other process notices too
        assert await second.check() is MarkerState.INTACT
        assert (first.losses, second.losses) == (1, 1)
    finally:
        await client.aclose()


async def test_run_calls_on_loss_when_poked(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lost = anyio.Event()
    try:
        marker = EpochMarker(client, prefix, timeout=5, interval=3600)  # only when poked
        await marker.claim()

        async def on_loss() -> None:
            lost.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(marker.run, on_loss)
            await client.delete(epoch_key(prefix))
            marker.poke()
            with anyio.fail_after(seconds(10)):
                await lost.wait()
            tg.cancel_scope.cancel()
        assert marker.losses == 1
    finally:
        await client.aclose()


class Inbox:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.received = anyio.Event()

    def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.received.set()


async def test_restarted_streams_are_read_from_their_start(redis_url: str, prefix: str) -> None:
    """After a loss a new stream's ids can be below the ids read before (another Redis's
    clock): the reader must not wait for ids beyond the old ones."""
    client = aioredis.Redis.from_url(redis_url)
    reader = aioredis.Redis.from_url(redis_url, single_connection_client=True)
    key = room_stream_key(prefix, "restarted")
    inbox = Inbox()
    try:
        bus = Bus(reader, client, block_ms=200)
        bus.subscribe(key, inbox)
        epoch = bus.epoch
        bus.position_at(key, StreamId(2 ** 50), epoch)  # read up to there in the lost stream
        # map.set('key', 'value') by client 1 (docs/protocol.md), at an id below that position
        update = bytes.fromhex("000217010101002801036d6170036b657901770576616c756500")
        await client.xadd(key, {"m": update}, id="5-1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.run)
            bus.restart_streams()
            assert bus.epoch != epoch
            with anyio.fail_after(seconds(10)):
                await inbox.received.wait()
            tg.cancel_scope.cancel()
        assert b"value" in inbox.frames[0]

        # a join that loaded before the restart starts at the new stream's start, too
        other = room_stream_key(prefix, "loaded before")
        late = Inbox()
        bus.subscribe(other, late)
        bus.position_at(other, StreamId(2 ** 50), epoch)
        assert bus.rooms[other].position == StreamId(0, 0)
    finally:
        await reader.aclose()
        await client.aclose()
