"""The metrics a deployment watches: the worker's (``ysync-worker --metrics-port``, and the
server's ``/metrics`` for the in-process worker) and the server's latency histograms. Real
processes, a real Redis, real y-websocket clients."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from ysync.config import StorageConfig
from ysync.streams import room_stream_key

from harness import NodeClients, http_get, running_server, wait_until
from storage_fixtures import append_updates, edit_doc, free_port, storage_env
from worker_process import TIMING, WorkerProcess

pytestmark = [pytest.mark.anyio]


async def samples(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample at ``url`` (Prometheus text format)."""
    status, text = await http_get(url)
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def test_worker_metrics_port(tmp_path: Path, redis_url: str, prefix: str,
                                   client: aioredis.Redis) -> None:
    """A continuous ``ysync-worker`` with ``--metrics-port``: /healthz is 200, and /metrics
    counts the compaction (task, duration, bytes persisted) and shows the queue."""
    port = free_port()
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **TIMING, **storage_env(storage),
           "YSYNC_WORKER_METRICS_PORT": str(port)}
    key = room_stream_key(prefix, "measured")
    updates, _expected = edit_doc(client_id=11)
    await append_updates(client, prefix, key, updates)
    worker = WorkerProcess(env, tmp_path)
    await worker.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async def compacted() -> bool:
            try:
                found = await samples(f"{base}/metrics")
            except OSError:
                return False  # not listening yet
            return found.get("ysync_worker_tasks_completed_total", 0) >= 1

        await wait_until(compacted, 20, "the worker's metrics to count a compaction")
        assert await http_get(f"{base}/healthz") == (200, "ok\n")
        assert await http_get(f"{base}/livez") == (200, "alive\n")
        assert (await http_get(f"{base}/nothing"))[0] == 404

        async def queue_seen() -> bool:
            # the queue is looked at every few seconds: the compaction re-queued the task
            return (await samples(f"{base}/metrics")).get("ysync_worker_queue_tasks") == 1

        await wait_until(queue_seen, 20, "the worker's view of the queue")
        found = await samples(f"{base}/metrics")
        assert found["ysync_worker_compaction_seconds_count"] >= 1
        assert found["ysync_worker_persisted_bytes_total"] > 0
        assert found["ysync_worker_task_failures_total"] == 0
        assert found["ysync_worker_persist_failures_total"] == 0
        # the re-queued task is due after the debounce (100 ms) and is then handled at once
        assert 0 <= found["ysync_worker_oldest_due_task_seconds"] < 10
        assert await worker.stop() == 0
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()


@pytest.mark.node
async def test_server_metrics_show_loads_fanout_and_the_in_process_worker(
    tmp_path: Path, redis_url: str, prefix: str, clients: NodeClients,
) -> None:
    storage = StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, **storage_env(storage),
           "YSYNC_WORKER_ENABLED": "yes", "REDIS_TASK_DEBOUNCE": "100",
           "REDIS_MIN_MESSAGE_LIFETIME": "0"}
    async with running_server(env) as server:
        for name in ("writer", "reader"):
            await clients.open(name, server.url, "measured")
            await clients.synced(name)
        await clients.call("burst", name="writer", tag="w.", count=5, interval=10)
        url = server.url.replace("ws://", "http://") + "/metrics"

        async def measured() -> bool:
            found = await samples(url)
            return (found.get("ysync_fanout_delay_seconds_count", 0) >= 1
                    and found.get("ysync_worker_tasks_completed_total", 0) >= 1)

        await wait_until(measured, 20, "fan-out and the in-process worker in /metrics")
        found = await samples(url)
        assert found["ysync_doc_load_seconds_count"] >= 1
        assert found["ysync_worker_compaction_seconds_count"] >= 1
        # on one machine Redis's clock is ours: a local fan-out takes well under ten seconds
        assert found["ysync_fanout_delay_seconds_bucket{le=10.0}"] == \
            found["ysync_fanout_delay_seconds_count"]
        # no room name is ever a label
        assert not any("measured" in name for name in found)
