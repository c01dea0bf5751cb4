"""The compaction worker (docs/protocol.md, y-redis ``src/api.js`` ``consumeWorkerQueue``).

Each room stream has one task in the worker queue ``<prefix>:worker`` (on a Redis Cluster:
in its shard's queue, ``Layout.queues``), owned by the consumer ``pending`` until it has been
idle for ``redis.task_debounce`` ms; then a worker claims it with XAUTOCLAIM and

* if the stream is empty: deletes the stream (if still empty) and the task, in one script;
* else: loads snapshot + stream; if the stream added anything, calls the update callback,
  persists the whole document as a new v2 snapshot and, once that succeeded, deletes the
  snapshots it merged; then, in one script, trims the stream to ``lastId -
  redis.min_message_lifetime``, re-queues the task (claimed by ``pending`` again) and deletes
  the claimed one.

The scripts run the commands of y-redis's MULTI blocks, as atomically; a cluster runs them on
the one slot of a stream and its queue.

Nothing is trimmed before it is persisted, and a snapshot is only deleted by the worker that
merged it into a newer persisted one, so any number of workers (ysync's and y-redis's) can share
a queue: a crash or a race costs at most a duplicate snapshot or a duplicate task, never data.
A persist that fails or times out, and a stored snapshot that does not decode, fail the task:
nothing is merged or trimmed, and the task is claimed again after the debounce. A worker that
failed on a stream backs off: it puts that stream's task off for twice the debounce after the
first failure (at least 2 s), four times after the second, and so on up to ``worker.retry_max`` s
(other workers, which did not fail on it, may take it sooner).

For tests only, ``$YSYNC_TEST_FAULT`` (read once, at import) names one of :data:`FAULT_POINTS`:
the process kills itself (SIGKILL) when a compaction reaches that point, so that the fault
tests can stop a worker at each step (tests/faults/). Unset, each point costs a ``None`` check.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_process
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from workers.callback import send_update
from workers.history import record_version
from ysync.cluster import check_cluster_layout
from ysync.config import Config
from ysync.docs import DocSources, compact_sources, read_doc_sources
from ysync.errors import BusError, ConfigError, StorageError, UpdateFormatError, YsyncError
from ysync.metrics import WorkerMetrics
from ysync.redis_clients import RedisClient
from ysync.storage.base import Storage
from ysync.streams import StreamId, ensure_worker_groups

log = logging.getLogger(__name__)

T = TypeVar("T")

#: XREADGROUP COUNT when re-queueing, as y-redis.
_REQUEUE_READ_COUNT = 50
#: Streams whose failures a worker remembers for its backoff at most (the oldest is forgotten).
MAX_BACKOFF_STREAMS = 10_000
#: Seconds a failed stream's backoff starts from when the debounce is shorter (tests use 0).
MIN_BACKOFF = 1.0
#: Seconds between two looks at the queue's length and oldest task (for the metrics).
QUEUE_OBSERVE_INTERVAL = 5.0


# The worker's atomic steps, each on a room stream and its queue (KEYS[1], KEYS[2]) or on the
# queue alone: y-redis's MULTI blocks as scripts, which a Redis Cluster runs on the keys' one
# slot (its client's transactions cannot; the effects are the same).
# An empty stream: delete it if still empty, and its task (ARGV[1]).
_REMOVE_SCRIPT = """
if redis.call("XLEN", KEYS[1]) == 0 then
  redis.call("DEL", KEYS[1])
end
redis.call("XACK", KEYS[2], KEYS[2], ARGV[1])
redis.call("XDEL", KEYS[2], ARGV[1])
"""
# Compacted: trim the stream below ARGV[1], queue a new task (owned by "pending", XREADGROUP
# COUNT ARGV[3]; "pending" is y-redis's name, part of the wire contract), delete the task done
# (ARGV[2]).
_REQUEUE_SCRIPT = """
redis.call("XTRIM", KEYS[1], "MINID", ARGV[1])
redis.call("XADD", KEYS[2], "*", "compact", KEYS[1])
redis.call("XREADGROUP", "GROUP", KEYS[2], "pending", "COUNT", ARGV[3], "STREAMS", KEYS[2], ">")
redis.call("XACK", KEYS[2], KEYS[2], ARGV[2])
redis.call("XDEL", KEYS[2], ARGV[2])
"""
# Duplicate tasks (ARGV) of a stream just compacted.
_DROP_SCRIPT = """
redis.call("XACK", KEYS[1], KEYS[1], unpack(ARGV))
redis.call("XDEL", KEYS[1], unpack(ARGV))
"""


@dataclass(slots=True)
class _Backoff:
    failures: int
    delay: float  # seconds, from the last failure
    retry_at: float  # time.monotonic()

#: The steps of a compaction at which ``$YSYNC_TEST_FAULT`` can kill the worker, in order:
#: before persisting the new snapshot; after persisting it, before deleting the snapshots it
#: merged; after deleting them, before trimming the stream; after the transaction that trims
#: the stream and re-queues the task (one MULTI: no state lies between the two).
FAULT_POINTS = ("before-persist", "after-persist", "after-delete", "after-trim")
FAULT_ENV = "YSYNC_TEST_FAULT"
#: For tests only (see the module docstring); ``None`` in production.
_FAULT: str | None = os.environ.get(FAULT_ENV) or None


def _crash_at(point: str) -> None:
    """Kill this process at once, without any clean-up, if ``$YSYNC_TEST_FAULT`` is ``point``."""
    if _FAULT == point:
        log.warning("%s=%s: killing this worker process (SIGKILL)", FAULT_ENV, point)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Task:
    """One entry of the worker queue ``queue``: compact ``stream_key``."""

    id: StreamId
    stream_key: str
    queue: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_tasks(entries: Sequence[Any], queue: str) -> list[Task]:
    """Tasks of ``queue`` from XAUTOCLAIM/XCLAIM entries ``(id, {field: value})``.

    Entries deleted meanwhile (``None``, or without ``compact``) are skipped, as y-redis does.
    """
    tasks = []
    for entry in entries:
        if not entry:
            continue
        entry_id, fields = entry
        if not fields:
            continue
        stream = fields.get(b"compact", fields.get("compact"))
        if stream:
            tasks.append(Task(StreamId.parse(entry_id), _text(stream), queue))
    return tasks


def trim_min_id(last_id: StreamId, task_id: StreamId, min_message_lifetime: int) -> int:
    """XTRIM MINID: ``max(ms of the last stream entry, ms of the task) - lifetime`` (>= 0)."""
    return max(0, max(last_id.ms, task_id.ms) - min_message_lifetime)


class Worker:
    """Compacts room streams of ``config.redis.prefix`` into ``storage``.

    ``client`` must return bytes (``decode_responses=False``). ``consumer`` names this worker in
    the consumer group; by default a random UUID, like y-redis's workers. ``metrics``: where
    the worker counts tasks and failures (the server's registry when it runs in-process; its
    own by default).
    """

    def __init__(self, client: RedisClient, storage: Storage, config: Config,
                 consumer: str | None = None, *, metrics: WorkerMetrics | None = None) -> None:
        if _FAULT is not None:
            if _FAULT not in FAULT_POINTS:
                raise ConfigError(f"{FAULT_ENV}={_FAULT!r} is not a fault point "
                                  f"({', '.join(FAULT_POINTS)}); it is for tests only")
            log.warning("%s=%s: this worker kills itself at that step of a compaction "
                        "(for tests only)", FAULT_ENV, _FAULT)
        self.client = client
        self.storage = storage
        self.config = config
        self.prefix = config.redis.prefix
        self.layout = config.layout
        #: the worker queues: y-redis's one, or one per shard of the cluster layout
        self.queues = self.layout.queues
        self.consumer = consumer or str(uuid.uuid4())
        #: tasks that failed (logged and left pending for a later retry) since start
        self.failures = 0
        #: tasks handled (compacted or removed) since start
        self.completed = 0
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._remove = client.register_script(_REMOVE_SCRIPT)
        self._requeue = client.register_script(_REQUEUE_SCRIPT)
        self._drop = client.register_script(_DROP_SCRIPT)
        self._group_ready = False
        self._stopping = anyio.Event()
        self._backoff: OrderedDict[str, _Backoff] = OrderedDict()
        self._observed_at = float("-inf")

    def stop(self) -> None:
        """Ask :meth:`run` to return once the tasks in hand are finished."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _redis(self, what: str, command: Awaitable[T]) -> T:
        try:
            with anyio.fail_after(self.config.redis.timeout):
                return await command
        except TimeoutError as exc:
            raise BusError(f"{what}: no answer from Redis within "
                           f"{self.config.redis.timeout} s") from exc
        except redis_errors.RedisError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # Redis lost the queue: create it again next round
            raise BusError(f"{what} failed: {exc}") from exc

    async def _ensure_group(self) -> None:
        if not self._group_ready:
            await ensure_worker_groups(self.client, self.layout)
            self._group_ready = True

    async def process_due_tasks(self) -> int:
        """One round: XAUTOCLAIM up to ``worker.try_claim_count`` tasks idle for at least
        ``redis.task_debounce`` ms and process them concurrently. Returns the number claimed.

        A task that fails is logged, counted in :attr:`failures` and stays pending: it is
        claimed again (by any worker) after the debounce.
        """
        await self._ensure_group()
        await self._observe_queue()
        tasks: list[Task] = []
        for queue in self.queues:  # the cluster layout: every shard's queue, one claim each
            reply = await self._redis(f"claiming tasks of {queue}", self.client.xautoclaim(
                queue, queue, self.consumer,
                min_idle_time=self.config.redis.task_debounce, start_id="0",
                count=self.config.worker.try_claim_count))
            tasks += parse_tasks(reply[1], queue)
        await self._process(tasks)
        return len(tasks)

    async def process_tasks_due_before(self, end: StreamId) -> int:
        """Process every task created before ``end`` that is due; return how many.

        Tasks are listed with XPENDING (IDLE ``task_debounce``) and taken with XCLAIM (same
        min-idle, so two workers never both get one), so the tasks this run re-queues are not
        touched again: a ``--once`` run ends even with a zero debounce.
        """
        await self._ensure_group()
        total = 0
        debounce = self.config.redis.task_debounce
        for queue in self.queues:
            cursor = "-"
            while not self.stopping:
                pending = await self._redis(f"listing due tasks of {queue}",
                                            self.client.xpending_range(
                                                queue, queue, min=cursor, max=f"({end}",
                                                count=self.config.worker.try_claim_count,
                                                idle=debounce))
                if not pending:
                    break
                ids: list[Any] = [entry["message_id"] for entry in pending]
                claimed = await self._redis(f"claiming tasks of {queue}", self.client.xclaim(
                    queue, queue, self.consumer, min_idle_time=debounce, message_ids=ids))
                tasks = parse_tasks(claimed, queue)
                await self._process(tasks)
                total += len(tasks)
                cursor = f"({StreamId.parse(ids[-1])}"
        return total

    async def _observe_queue(self) -> None:
        """Every few seconds: the queue's length and how long its oldest task has been due."""
        now = time.monotonic()
        if now - self._observed_at < QUEUE_OBSERVE_INTERVAL:
            return
        self._observed_at = now

        async def look() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.xlen(queue)
                    pipe.xrange(queue, count=1)
                return list(await pipe.execute())

        replies = await self._redis("looking at the queue", look())
        seconds, micros = await self._redis("reading the clock", self.client.time())
        self.metrics.queue_tasks.set(sum(int(length) for length in replies[::2]))
        firsts = [StreamId.parse(oldest[0][0]).ms for oldest in replies[1::2] if oldest]
        due_for = 0.0
        if firsts:
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            age_ms = now_ms - min(firsts)
            due_for = max(0, age_ms - self.config.redis.task_debounce) / 1000
        self.metrics.oldest_due_task_seconds.set(due_for)

    async def run(self, *, once: bool = False) -> None:
        """Process tasks until :meth:`stop` (continuous), or every due task then return (once).

        Continuous: a round that claims nothing is followed by ``worker.idle_wait`` seconds of
        rest; a failing round (Redis down) is logged and retried after the same rest. Once:
        Redis errors propagate; failed tasks are counted in :attr:`failures`. On a Redis
        Cluster, another shard count than the prefix's raises ConfigError first.
        """
        if isinstance(self.client, RedisCluster):
            await self._redis("checking the cluster layout",
                              check_cluster_layout(self.client, self.layout))
        if once:
            seconds, micros = await self._redis("reading the clock", self.client.time())
            # every task made up to this millisecond (Redis's clock, as the task ids)
            processed = await self.process_tasks_due_before(
                StreamId(int(seconds) * 1000 + int(micros) // 1000 + 1))
            log.info("worker %s: %d due task(s) processed, %d failed", self.consumer,
                     processed, self.failures)
            return
        where = self.queues[0] if len(self.queues) == 1 else \
            f"the {len(self.queues)} shard queues of {self.layout}"
        log.info("worker %s started on %s (debounce %d ms, min message lifetime %d ms)",
                 self.consumer, where, self.config.redis.task_debounce,
                 self.config.redis.min_message_lifetime)
        while not self.stopping:
            try:
                claimed = await self.process_due_tasks()
            except YsyncError as exc:
                log.error("worker %s: %s", self.consumer, exc)
                claimed = 0
            except Exception:
                # a bug must not stop compaction for every document: log it whole, go on
                log.exception("worker %s: unexpected error", self.consumer)
                claimed = 0
            if claimed == 0:
                with anyio.move_on_after(self.config.worker.idle_wait):
                    await self._stopping.wait()
        log.info("worker %s stopped", self.consumer)

    async def _process(self, tasks: Sequence[Task]) -> None:
        if not tasks:
            return
        log.debug("worker %s accepted %d task(s)", self.consumer, len(tasks))
        by_stream: dict[str, list[Task]] = {}
        for task in tasks:
            by_stream.setdefault(task.stream_key, []).append(task)
        async with anyio.create_task_group() as tg:
            for same_stream in by_stream.values():
                tg.start_soon(self._process_stream, same_stream)

    async def _process_stream(self, tasks: Sequence[Task]) -> None:
        """Process the first task of a stream; drop its duplicates once that succeeded.

        A stream can have two tasks (two workers raced, as y-redis warns); compacting it twice
        at once would only write two snapshots. The one processed re-queues a task (or deletes
        the empty stream), so the others are not needed; if it fails, they stay pending.
        """
        first, duplicates = tasks[0], tasks[1:]
        key = first.stream_key
        backoff = self._backoff.get(key)
        if backoff is not None and time.monotonic() < backoff.retry_at:
            # claimed (so no other worker takes it before the debounce), not compacted
            self.metrics.retries_delayed.inc()
            log.debug("%s: retry put off for %.1f s more (backoff after %d failure(s))", key,
                      backoff.retry_at - time.monotonic(), backoff.failures)
            return
        started = time.perf_counter()
        try:
            await self.compact(first)
        except YsyncError as exc:
            self.failures += 1
            self.metrics.task_failures.inc()
            delay = self._back_off(key)
            log.error("compacting %s (task %s) failed; this worker retries it in %.1f s: %s",
                      key, first.id, delay, exc)
            return
        self.metrics.compaction_seconds.observe(time.perf_counter() - started)
        if self._backoff.pop(key, None) is not None:
            log.info("%s: compacted again after earlier failures", key)
        self.completed += 1
        self.metrics.tasks_completed.inc()
        if duplicates:
            ids = [str(task.id) for task in duplicates]
            try:
                await self._redis("deleting duplicate tasks",
                                  self._drop(keys=[first.queue], args=ids))
            except BusError as exc:
                log.warning("%s: keeping duplicate task(s) %s: %s", first.stream_key, ids, exc)
                return
            self.completed += len(duplicates)
            self.metrics.tasks_completed.inc(len(duplicates))
            log.info("%s: dropped duplicate task(s) %s", first.stream_key, ids)

    def _back_off(self, key: str) -> float:
        """Note one more failure of ``key``; return the seconds until this worker retries it:
        the debounce (at least :data:`MIN_BACKOFF`) doubled per failure, at most
        ``worker.retry_max`` (and never less than the debounce, after which any worker may
        claim it)."""
        previous = self._backoff.pop(key, None)
        failures = 1 if previous is None else previous.failures + 1
        debounce = self.config.redis.task_debounce / 1000
        base = max(debounce, MIN_BACKOFF)
        delay: float = max(debounce, min(self.config.worker.retry_max,
                                         base * 2 ** min(failures, 32)))
        self._backoff[key] = _Backoff(failures, delay, time.monotonic() + delay)
        while len(self._backoff) > MAX_BACKOFF_STREAMS:
            self._backoff.popitem(last=False)
        return delay

    async def compact(self, task: Task) -> None:
        """Handle one claimed task (the body of y-redis's loop). Raises YsyncError."""
        key = task.stream_key
        length = await self._redis(f"XLEN {key}", self.client.xlen(key))
        if length == 0:
            await self._redis(f"removing empty stream {key}",
                              self._remove(keys=[key, task.queue], args=[str(task.id)]))
            log.info("stream %s is empty: removed it and its task %s", key, task.id)
            return
        room, docid = self.layout.parse_room_key(key)
        if self.layout.cluster and self.layout.queue_of(key) != task.queue:
            raise BusError(f"task {task.id} of {task.queue} names {key}, a stream of another "
                           f"shard: its trim and re-queue would cross slots")
        sources, snapshot = await self._load_and_merge(room, docid)
        if snapshot is not None:
            if self.config.worker.update_callback:
                await send_update(self.config.worker.update_callback, room, snapshot,
                                  call_timeout=self.config.worker.callback_timeout)
            if _FAULT is not None:
                _crash_at("before-persist")
            await self._persist(room, docid, snapshot)
            self.metrics.persisted_bytes.inc(len(snapshot))
            if self.config.history.enabled:  # a version for the document API (never raises)
                await record_version(self.storage, self.config, room, docid, snapshot)
            if _FAULT is not None:
                _crash_at("after-persist")
            if sources.references:
                try:
                    await self.storage.delete_references(room, docid, sources.references)
                except YsyncError as exc:
                    # the new snapshot contains them: they only cost space until the next run
                    log.warning("%s: deleting merged snapshots %s failed: %s", key,
                                list(sources.references), exc)
            if _FAULT is not None:
                _crash_at("after-delete")
        min_id = trim_min_id(sources.last_id, task.id, self.config.redis.min_message_lifetime)

        await self._redis(f"trimming {key}", self._requeue(
            keys=[key, task.queue], args=[min_id, str(task.id), _REQUEUE_READ_COUNT]))
        if _FAULT is not None:
            _crash_at("after-trim")
        if snapshot is not None:
            log.info("compacted %s (task %s): persisted %d bytes, replaced %d snapshot(s) %s, "
                     "trimmed below %d", key, task.id, len(snapshot), len(sources.references),
                     list(sources.references), min_id)
        else:
            log.info("compacted %s (task %s): nothing new to persist, trimmed below %d",
                     key, task.id, min_id)

    async def _load_and_merge(self, room: str, docid: str) -> tuple[DocSources, bytes | None]:
        """The document's sources and, if the stream added anything, the new snapshot.

        Raises StorageError when storage cannot be read, and when a stored snapshot does not
        decode: such a snapshot is never merged (nor deleted), the stream is kept whole, and
        every retry fails the same way until the snapshot is repaired or removed.
        """
        try:
            sources = await read_doc_sources(self.client, self.storage, self.layout, room, docid)
        except StorageError as exc:
            self.metrics.persist_failures.inc()
            raise StorageError(f"room {room!r} doc {docid!r}: reading the stored snapshots "
                               f"failed: nothing trimmed: {exc}") from exc
        except UpdateFormatError as exc:  # a backend merging several snapshots
            self.metrics.unreadable_snapshots.inc()
            raise StorageError(f"room {room!r} doc {docid!r}: a stored snapshot does not "
                               f"decode ({exc}): nothing merged, nothing trimmed; repair or "
                               f"remove the snapshot") from exc
        try:
            snapshot = await anyio.to_process.run_sync(compact_sources, sources,
                                                       cancellable=True)
        except UpdateFormatError as exc:  # stream updates that do not decode are skipped
            self.metrics.unreadable_snapshots.inc()
            raise StorageError(f"room {room!r} doc {docid!r}: the stored snapshot "
                               f"{list(sources.references)} does not decode ({exc}): nothing "
                               f"merged, nothing trimmed; repair or remove it") from exc
        return sources, snapshot

    async def _persist(self, room: str, docid: str, snapshot: bytes) -> None:
        """``storage.persist_doc``, bounded by ``storage.timeout``; a failure is counted and
        raised as StorageError (the caller then trims nothing)."""
        timeout = self.config.storage.timeout
        try:
            with anyio.fail_after(timeout):
                await self.storage.persist_doc(room, docid, snapshot)
        except TimeoutError as exc:
            self.metrics.persist_failures.inc()
            raise StorageError(f"room {room!r} doc {docid!r}: persisting {len(snapshot)} bytes "
                               f"timed out after {timeout} s: nothing trimmed") from exc
        except StorageError as exc:
            self.metrics.persist_failures.inc()
            raise StorageError(f"room {room!r} doc {docid!r}: persisting {len(snapshot)} bytes "
                               f"failed: nothing trimmed: {exc}") from exc
