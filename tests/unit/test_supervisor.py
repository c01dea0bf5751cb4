"""What ``ysync serve --server-processes N`` tells its children (ysync.supervisor)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ysync.config import load_config
from ysync.errors import YsyncError
from ysync.supervisor import child_settings, process_count, reserve_port


def flags(values: list[str]) -> dict[str, str]:
    return dict(zip(values[::2], values[1::2], strict=True))


def test_children_of_the_embedded_default_share_its_redis_storage_and_one_worker(
    tmp_path: Path,
) -> None:
    config = load_config(environ={"YSYNC_DATA_DIR": str(tmp_path)})
    first = flags(child_settings(config, "unix:///x/redis.sock", 4321, 0))
    other = flags(child_settings(config, "unix:///x/redis.sock", 4321, 1))
    assert first["--redis-url"] == "unix:///x/redis.sock"
    assert first["--storage-kind"] == "filesystem"
    assert first["--storage-path"] == str((tmp_path / "storage").resolve())
    assert (first["--worker-enabled"], other["--worker-enabled"]) == ("yes", "no")
    assert first["--server-port"] == "4321" and first["--server-reuse-port"] == "yes"
    assert first["--server-processes"] == "1"
    assert first["--server-demo"] == "yes"  # the demo of the embedded default stays on
    assert first["--api-enabled"] == other["--api-enabled"] == "yes"  # so does its API


def test_children_with_an_external_redis_read_their_own_settings() -> None:
    config = load_config(environ={"REDIS": "redis://h:6379", "POSTGRES": "postgres://db/y"})
    first = flags(child_settings(config, "redis://h:6379", 1, 0))
    assert "--redis-url" not in first and "--storage-kind" not in first
    assert first["--worker-enabled"] == "no" and first["--server-demo"] == "no"
    assert first["--api-enabled"] == "no"


def test_zero_processes_means_one_per_core() -> None:
    config = load_config(environ={"YSYNC_SERVER_PROCESSES": "0"})
    assert process_count(config) == len(os.sched_getaffinity(0))
    assert process_count(load_config(environ={"YSYNC_SERVER_PROCESSES": "3"})) == 3


def test_a_reserved_port_is_shared_with_reuse_port_sockets() -> None:
    reserved = reserve_port("127.0.0.1", 0)
    try:
        port = reserved.getsockname()[1]
        child = socket.socket()
        child.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        child.bind(("127.0.0.1", port))  # as a child's server does
        child.listen()
        child.close()
    finally:
        reserved.close()


def test_a_port_taken_by_another_program_is_refused_by_name() -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(YsyncError, match=f"cannot bind 127.0.0.1:{port}"):
            reserve_port("127.0.0.1", port)
    finally:
        taken.close()
