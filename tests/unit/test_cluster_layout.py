"""The cluster layout's keys (docs/protocol.md, "Redis Cluster layout"): every key a script
touches in one slot, shards spread evenly over the slots, y-redis's layout unchanged."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from ysync.cluster import cluster_startup_nodes
from ysync.errors import BusError, ConfigError
from ysync.streams import Layout, append_script, room_stream_key, shard_tags


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_y_redis_layout_is_unchanged() -> None:
    layout = Layout("y")
    assert not layout.cluster
    assert layout.room_key("a b", "d") == room_stream_key("y", "a b", "d") == "y:room:a%20b:d"
    assert layout.queues == ("y:worker",)
    assert layout.queue_of("y:room:a:index") == "y:worker"
    assert layout.append_script == append_script("y")
    assert layout.append_keys("y:room:a:index") == ["y:room:a:index"]
    assert layout.parse_room_key("y:room:a%20b:d") == ("a b", "d")


@pytest.mark.parametrize("shards", [1, 3, 16, 1024])
def test_shard_tags_are_spread_evenly_over_the_slots(shards: int) -> None:
    tags = shard_tags(shards)
    assert len(tags) == shards
    for i, tag in enumerate(tags):
        assert i * 16384 // shards <= key_slot(tag.encode()) < (i + 1) * 16384 // shards


def test_a_stream_and_its_queue_share_a_slot() -> None:
    layout = Layout("y", 16)
    for room in ["a", "b", "a room", "{tag}", "ü", "x" * 300]:
        for docid in ["index", "other"]:
            key = layout.room_key(room, docid)
            assert key.startswith("y:{")
            assert layout.parse_room_key(key) == (room, docid)
            queue = layout.queue_of(key)
            assert queue == layout.queues[layout.shard_of(room)]
            assert slot(key) == slot(queue)
            assert layout.append_keys(key) == [key, queue]
    shards = {layout.shard_of(f"room-{i}") for i in range(200)}
    assert shards == set(range(16))


def test_a_key_outside_its_rooms_shard_is_refused() -> None:
    layout = Layout("y", 16)
    key = layout.room_key("a")
    other_tag = next(t for t in shard_tags(16) if t != layout.tag(layout.shard_of("a")))
    moved = key.replace(layout.tag(layout.shard_of("a")), other_tag)
    with pytest.raises(BusError, match="not in its room's shard"):
        layout.parse_room_key(moved)
    with pytest.raises(BusError, match="malformed"):
        layout.parse_room_key("y:room:a:index")  # y-redis's layout
    with pytest.raises(ValueError, match="hash tag"):
        Layout("a{b}", 16)


def test_cluster_urls() -> None:
    assert cluster_startup_nodes("redis+cluster://h1:7000,h2:7001") == (
        [("h1", 7000), ("h2", 7001)], {})
    assert cluster_startup_nodes("redis://u:p%40ss@h:7000/0") == (
        [("h", 7000)], {"username": "u", "password": "p@ss"})
    assert cluster_startup_nodes("rediss://h")[1] == {"ssl": True}
    with pytest.raises(ConfigError, match="bad port"):
        cluster_startup_nodes("redis+cluster://h1:x")
    with pytest.raises(ConfigError, match="several nodes"):
        cluster_startup_nodes("redis://h1:1,h2:2")
