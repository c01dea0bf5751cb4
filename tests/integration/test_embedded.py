"""The embedded default: `ysync serve` with nothing configured runs a complete deployment."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from conftest import seconds
from harness import NodeClients, ServerProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.node]


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS", "POSTGRES")}
    return {**env, "YSYNC_DATA_DIR": str(data_dir), "REDIS_TASK_DEBOUNCE": "500",
            "REDIS_MIN_MESSAGE_LIFETIME": "500", **extra}


def redis_pid(data_dir: Path) -> int:
    return int((data_dir / "redis" / "redis.pid").read_text().strip())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_updates_survive_sigkill_and_clean_stop(tmp_path: Path, node_dir: Path) -> None:
    data_dir = tmp_path / "data"
    server = await ServerProcess(embedded_env(data_dir)).start()
    async with NodeClients(node_dir) as clients:
        await clients.open("w", server.url, "durable")
        await clients.synced("w")
        await clients.call("insertText", name="w", text="before the crash")
        await clients.call("mapSet", name="w", key="n", value=1)
        await asyncio.sleep(seconds(2.5))  # the guarantee: what arrived 2 s before a crash stays
        pid = redis_pid(data_dir)
        assert await server.kill() == -signal.SIGKILL
        await clients.call("close", name="w")

        async def redis_gone() -> bool:
            return not alive(pid)

        await wait_until(redis_gone, 30, "the embedded redis-server to exit with its parent")

        server = await ServerProcess(embedded_env(data_dir)).start()
        try:
            await clients.open("r", server.url, "durable")
            await clients.synced("r")
            state = await clients.get("r")
            assert state["text"] == "before the crash" and state["map"] == {"n": 1}
            await clients.call("insertText", name="r", text=" and after")
            await clients.call("close", name="r")
        finally:
            assert await server.stop() == 0  # SIGTERM: a clean stop

        server = await ServerProcess(embedded_env(data_dir)).start()
        pid = redis_pid(data_dir)
        try:
            await clients.open("z", server.url, "durable")
            await clients.synced("z")
            assert (await clients.get("z"))["text"] == "before the crash and after"
        finally:
            assert await server.stop(signal.SIGINT) == 0
    assert not alive(pid), "a clean stop stops the embedded redis-server too"


async def test_in_process_worker_persists_to_the_filesystem(tmp_path: Path,
                                                             node_dir: Path) -> None:
    data_dir = tmp_path / "data"
    snapshots = data_dir / "storage" / "persisted%2520room" / "index"
    async with NodeClients(node_dir) as clients:
        server = await ServerProcess(embedded_env(data_dir)).start()
        try:
            await clients.open("w", server.url, "persisted room")
            await clients.synced("w")
            await clients.call("insertText", name="w", text="kept by the worker")
            await clients.call("arrayPush", name="w", values=[1, 2, 3])

            async def snapshot_written() -> bool:
                return snapshots.is_dir() and any(
                    not p.name.startswith(".") for p in snapshots.iterdir())

            await wait_until(snapshot_written, 20, "the in-process worker to write a snapshot")
            await clients.call("close", name="w")
            # the in-process worker counts on the server's own /metrics
            async with httpx.AsyncClient(timeout=seconds(5)) as http:
                url = server.url.replace("ws://", "http://") + "/metrics"

                async def task_counted() -> bool:
                    metrics = (await http.get(url)).text
                    return any(line.startswith("ysync_worker_tasks_completed_total ")
                               and float(line.split()[1]) >= 1
                               for line in metrics.splitlines())

                await wait_until(task_counted, 20, "the worker's tasks on the server's /metrics")
        finally:
            assert await server.stop() == 0
        # lose Redis entirely: what the worker persisted must be enough
        for leftover in (data_dir / "redis").iterdir():
            if leftover.is_dir():
                for item in leftover.iterdir():
                    item.unlink()
                leftover.rmdir()
            else:
                leftover.unlink()
        server = await ServerProcess(embedded_env(data_dir)).start()
        try:
            await clients.open("r", server.url, "persisted room")
            await clients.synced("r")
            state = await clients.get("r")
            assert state["text"] == "kept by the worker" and state["arr"] == [1, 2, 3]
        finally:
            assert await server.stop() == 0
