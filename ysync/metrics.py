"""Prometheus metrics, served at ``GET /metrics`` by every server process.

Counters are incremented on the paths they describe; gauges are read when scraped, from the
live objects, so they can never drift from the truth. The compaction worker's counters
(:class:`WorkerMetrics`) live in the server's registry when the worker runs in-process, and in
a registry of their own in ``ysync-worker``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Seconds, for latencies from a millisecond to ten seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds, for work that may take a minute (loading or compacting a large document).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    """The counters of one compaction worker, in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tasks_completed = Counter(
            "ysync_worker_tasks_completed",
            "worker tasks handled: a stream compacted (and trimmed) or an empty one removed",
            registry=r)
        self.task_failures = Counter(
            "ysync_worker_task_failures",
            "worker tasks that failed, any reason; each stays queued and is retried",
            registry=r)
        self.persist_failures = Counter(
            "ysync_worker_persist_failures",
            "compactions that persisted nothing because storage failed or timed out (reading "
            "the stored snapshots or writing the new one); nothing was trimmed",
            registry=r)
        self.unreadable_snapshots = Counter(
            "ysync_worker_unreadable_snapshots",
            "compactions stopped because a stored snapshot does not decode (corrupt): it was "
            "not merged and nothing was trimmed",
            registry=r)
        self.compaction_seconds = Histogram(
            "ysync_worker_compaction_seconds",
            "time to handle one task: read snapshot and stream, merge, persist, trim",
            buckets=DURATION_BUCKETS, registry=r)
        self.persisted_bytes = Counter(
            "ysync_worker_persisted_bytes", "bytes of snapshots persisted to storage",
            registry=r)
        self.retries_delayed = Counter(
            "ysync_worker_retries_delayed",
            "claimed tasks put off because their stream failed recently (backoff)",
            registry=r)
        self.queue_tasks = Gauge(
            "ysync_worker_queue_tasks",
            "tasks in the worker queue (one per room stream with entries), as last seen by this "
            "worker", registry=r)
        self.oldest_due_task_seconds = Gauge(
            "ysync_worker_oldest_due_task_seconds",
            "how long the oldest task in the queue has been due (older than the debounce) and "
            "not handled, as last seen by this worker; grows when workers fall behind",
            registry=r)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class Metrics:
    """The metrics of one server process (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("ysync_messages_received", "messages received from clients",
                                   ["type"], registry=r)
        self.messages_appended = Counter("ysync_messages_appended",
                                         "messages appended to room streams", registry=r)
        self.messages_dropped = Counter("ysync_messages_dropped",
                                        "client messages dropped (read-only or empty)",
                                        registry=r)
        self.frames_out = Counter("ysync_frames_sent", "messages queued to clients", registry=r)
        self.bytes_out = Counter("ysync_bytes_sent", "bytes queued to clients", registry=r)
        self.read_batches = Counter("ysync_stream_reads", "XREAD results handled", registry=r)
        self.doc_loads = Counter("ysync_doc_loads", "documents loaded for joining clients",
                                 registry=r)
        self.doc_load_seconds = Histogram(
            "ysync_doc_load_seconds",
            "time to load a document for joining clients (storage snapshot + room stream)",
            buckets=DURATION_BUCKETS, registry=r)
        self.fanout_delay_seconds = Histogram(
            "ysync_fanout_delay_seconds",
            "from a stream entry's time (its id, Redis's clock) to its frame being written to "
            "the room's local clients; the oldest entry of each read counts, once per room",
            buckets=LATENCY_BUCKETS, registry=r)
        self.closed = Counter("ysync_connections_closed_by_server",
                              "connections the server closed", ["reason"], registry=r)
        self.refused = Counter("ysync_upgrades_refused", "WebSocket upgrades refused (401)",
                               registry=r)
        self.connections = Gauge("ysync_connections", "open client connections", registry=r)
        self.rooms = Gauge("ysync_rooms", "rooms with local connections", registry=r)
        self.queued = Gauge("ysync_send_queue_bytes", "bytes waiting in client send queues",
                            registry=r)
        #: for the in-process worker (``Worker(..., metrics=metrics.worker)``)
        self.worker = WorkerMetrics(r)

    def bind_gauges(self, connections: Callable[[], int], rooms: Callable[[], int],
                    queued: Callable[[], int]) -> None:
        self.connections.set_function(connections)
        self.rooms.set_function(rooms)
        self.queued.set_function(queued)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
