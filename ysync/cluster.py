"""ysync on a Redis Cluster: the clients, the stream readers and the appenders of each shard.

The cluster layout (:class:`ysync.streams.Layout`, docs/protocol.md) puts each room in one of
``redis.cluster_shards`` shards, and every key of a shard in one hash slot. Redis Cluster runs
a multi-key command only on keys of one slot, so a server reads its rooms with one blocking
XREAD per shard that has local rooms (:class:`ShardedBus`), on a connection to the node that
owns the shard's slot, and appends with one batching appender per shard
(:class:`ShardedAppender`). Both follow the cluster: after a failed read or append (a
``MOVED`` redirect, a node that went away, a failover) they ask the cluster for its slot map
again and go to the node that owns the slot now. An append refused with a redirect is sent
again through redis-py's cluster client, which follows ``MOVED`` and ``ASK`` (a slot being
migrated) itself. Everything else (loading documents, the worker, operator commands) uses
redis-py's cluster client directly.
"""

from __future__ import annotations

import logging
import time
from collections import ChainMap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ysync.appender import Appender
from ysync.bus import Bus, Receiver, RoomSubscription
from ysync.config import CLUSTER_URL_SCHEME, Config
from ysync.errors import BusError, ConfigError
from ysync.metrics import Metrics
from ysync.redis_clients import is_redis_failure, redis_options
from ysync.streams import Layout, StreamId

log = logging.getLogger(__name__)

#: Seconds between two refreshes of the slot map at least (many shards fail at once).
REFRESH_INTERVAL = 0.2

#: Errors after which an append is sent again through the cluster client: redirects
#: (MOVED, ASK: the slot moved or is moving), TRYAGAIN, CLUSTERDOWN, and a node gone.
_FOLLOWED = (redis_errors.AskError, redis_errors.TryAgainError, redis_errors.ClusterError,
             redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError)


def cluster_startup_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The (host, port) pairs of a ``redis://``, ``rediss://`` or ``redis+cluster://h1:p1,...``
    URL, and its user name, password and TLS flag as redis-py options."""
    scheme, _, rest = url.partition("://")
    netloc = urlsplit(f"//{rest}").netloc
    userinfo, _, hosts = netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if scheme == "rediss":
        options["ssl"] = True
    nodes = []
    for part in hosts.split(","):
        if part.startswith("["):  # [IPv6 address]:port
            host, _, tail = part[1:].partition("]")
            port = tail.removeprefix(":")
        elif ":" in part:
            host, _, port = part.rpartition(":")
        else:
            host, port = part, ""
        host = host or "127.0.0.1"
        try:
            nodes.append((host, int(port) if port else 6379))
        except ValueError as exc:
            raise ConfigError(f"setting redis.url: bad port in {part!r} of a cluster URL") \
                from exc
    if scheme + "://" != CLUSTER_URL_SCHEME and len(nodes) != 1:
        raise ConfigError("setting redis.url: several nodes need a redis+cluster:// URL")
    return nodes, options


def cluster_client(url: str, config: Config, **options: Any) -> RedisCluster:
    """redis-py's cluster client of the cluster that ``url``'s nodes belong to, with the
    command timeout ``redis.timeout``, ``redis.max_connections`` connections per node and the
    TLS settings. It keeps working while a part of the slots has no master (a failover)."""
    nodes, url_options = cluster_startup_nodes(url)
    tls = redis_options("rediss://" if url_options.get("ssl") else url, config)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        require_full_coverage=False,
        socket_timeout=config.redis.timeout,
        socket_connect_timeout=config.redis.timeout,
        max_connections=config.redis.max_connections,
        **url_options, **tls, **options)


async def ping(client: aioredis.Redis | RedisCluster) -> None:
    """PING Redis; on a cluster, its masters until one answers (a failover or a node down
    leaves the rest of the cluster serving: the process stays ready). Raises what the last
    one raised."""
    if not isinstance(client, RedisCluster):
        await client.ping()
        return
    failure: BaseException | None = None
    for node in client.get_primaries():
        try:
            await client.ping(target_nodes=node)
            return
        except (redis_errors.RedisError, OSError) as exc:
            failure = exc
    raise failure or redis_errors.ConnectionError("the cluster client knows no master")


def layout_record_key(layout: Layout) -> str:
    """Where the cluster layout's shard count is recorded (one key, ysync's)."""
    return f"{layout.prefix}:ysync:layout"


async def check_cluster_layout(cluster: RedisCluster, layout: Layout) -> None:
    """Record the shard count on first use; refuse (ConfigError) another count than the one
    recorded: the rooms would be looked for in other keys than those that hold them."""
    key = layout_record_key(layout)
    record = f"cluster shards={layout.shards}"
    await cluster.set(key, record, nx=True)
    found = await cluster.get(key)
    found_text = found.decode() if isinstance(found, bytes) else str(found)
    if found_text != record:
        raise ConfigError(f"setting redis.cluster_shards (YSYNC_REDIS_CLUSTER_SHARDS): this "
                          f"process has {layout.shards} shards, but the prefix "
                          f"{layout.prefix!r} on this cluster was laid out with {found_text!r} "
                          f"(key {key}): use that count; it cannot change while the cluster "
                          f"holds rooms")


class ClusterNodes:
    """Which node owns each shard's slot (the cluster client's slot map), and plain clients of
    those nodes for the readers and appenders."""

    def __init__(self, cluster: RedisCluster, layout: Layout, config: Config) -> None:
        self.cluster = cluster
        self._layout = layout
        self._config = config
        self._slots = [key_slot(layout.tag(i).encode()) for i in range(layout.shards)]
        self._clients: dict[tuple[str, int], aioredis.Redis] = {}
        self._readers: set[aioredis.Redis] = set()
        self._refreshed = 0.0
        self._lock = anyio.Lock()
        self._connection_options = {
            key: value for key, value in cluster.connection_kwargs.items()
            if key in ("username", "password", "ssl", "ssl_ca_certs", "ssl_certfile",
                       "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")}
        self._scheme = "rediss" if self._connection_options.pop("ssl", False) else "redis"

    def owner(self, shard: int) -> tuple[str, int]:
        """The (host, port) of the master that owns the shard's slot, as last seen."""
        try:
            node = self.cluster.nodes_manager.get_node_from_slot(self._slots[shard])
        except (redis_errors.RedisError, IndexError, KeyError) as exc:
            raise BusError(f"no node owns slot {self._slots[shard]} of shard {shard}: "
                           f"{exc}") from exc
        return node.host, int(node.port)

    async def refresh(self) -> None:
        """Ask the cluster for its slot map again (at most every :data:`REFRESH_INTERVAL` s:
        the readers and appenders of many shards fail together)."""
        async with self._lock:
            if time.monotonic() - self._refreshed < REFRESH_INTERVAL:
                return
            try:
                with anyio.fail_after(self._config.redis.timeout):
                    await self.cluster.nodes_manager.initialize()
            except TimeoutError as exc:
                raise BusError("the cluster's slot map: no answer within "
                               f"{self._config.redis.timeout} s") from exc
            finally:
                self._refreshed = time.monotonic()

    def _options(self, *, blocking: bool) -> dict[str, Any]:
        timeout = self._config.redis.timeout + (
            self._config.redis.read_block / 1000 if blocking else 0)
        return {"socket_timeout": timeout, "socket_connect_timeout": self._config.redis.timeout,
                **self._connection_options}

    def client(self, host: str, port: int) -> aioredis.Redis:
        """The shared pooled client of one node (appenders, CLIENT UNBLOCK)."""
        client = self._clients.get((host, port))
        if client is None:
            pool = aioredis.BlockingConnectionPool(
                host=host, port=port, max_connections=self._config.redis.max_connections,
                timeout=self._config.redis.timeout,
                connection_class=(aioredis.SSLConnection if self._scheme == "rediss"
                                  else aioredis.Connection),
                **self._options(blocking=False))
            client = self._clients[(host, port)] = aioredis.Redis.from_pool(pool)
        return client

    def reader(self, host: str, port: int) -> aioredis.Redis:
        """A new single-connection client of one node, for one shard's blocking reads."""
        reader = aioredis.Redis(host=host, port=port, single_connection_client=True,
                                ssl=self._scheme == "rediss", **self._options(blocking=True))
        self._readers.add(reader)
        return reader

    async def drop_reader(self, reader: aioredis.Redis) -> None:
        self._readers.discard(reader)
        await reader.aclose()

    async def aclose(self) -> None:
        for client in [*self._readers, *self._clients.values()]:
            await client.aclose()
        self._readers.clear()
        self._clients.clear()


@dataclass(slots=True)
class _Where:
    """The node one shard's reader reads from, and its client."""

    owner: tuple[str, int]
    reader: aioredis.Redis
    node_failed: bool = False  # the last read failed with the node, not with a redirect


class ShardedBus:
    """The stream reader of a cluster: one :class:`~ysync.bus.Bus` per shard with local
    rooms, each reading from the node of its shard. The same interface as ``Bus``."""

    def __init__(self, nodes: ClusterNodes, layout: Layout, *, block_ms: int, count: int,
                 interval_ms: float, metrics: Metrics | None = None,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        self._nodes = nodes
        #: called with the receivers of a shard whose master went away and was replaced:
        #: what it acknowledged last may not have reached its replica, so the clients are
        #: asked for their documents again (``SyncHandler.ask_to_resync``)
        self.on_failover: Callable[[list[Receiver]], object] | None = None
        self._layout = layout
        self._options: dict[str, Any] = {"block_ms": block_ms, "count": count,
                                         "interval_ms": interval_ms, "metrics": metrics,
                                         "on_reconnect": on_reconnect}
        self._buses: dict[int, Bus] = {}
        self._unstarted: list[Bus] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._epoch = 0

    @property
    def rooms(self) -> ChainMap[str, RoomSubscription]:
        return ChainMap(*(bus.rooms for bus in self._buses.values()))

    @property
    def epoch(self) -> int:
        return self._epoch

    def _bus(self, stream_key: str) -> Bus:
        shard = self._layout.shard_of_key(stream_key)
        bus = self._buses.get(shard)
        if bus is None:
            bus = self._buses[shard] = self._new_bus(shard)
            if self._task_group is None:
                self._unstarted.append(bus)
            else:
                self._task_group.start_soon(bus.run)
        return bus

    def _new_bus(self, shard: int) -> Bus:
        owner = self._nodes.owner(shard)
        reader = self._nodes.reader(*owner)
        control = self._nodes.client(*owner)
        where = _Where(owner, reader)

        async def relocate(failure: BaseException) -> tuple[aioredis.Redis, aioredis.Redis]:
            # a redirect comes from a node that answers; any other failure may be its end
            where.node_failed = not isinstance(failure, redis_errors.ResponseError)
            await self._nodes.refresh()
            now = self._nodes.owner(shard)
            if now != where.owner:
                log.info("shard %d: reading its streams from %s:%d now (was %s:%d)", shard,
                         *now, *where.owner)
                old = where.reader
                where.owner, where.reader = now, self._nodes.reader(*now)
                await self._nodes.drop_reader(old)
                if where.node_failed and self.on_failover is not None:
                    receivers = [r for room in bus.rooms.values() for r in room.receivers]
                    log.warning("shard %d: its master failed over to %s:%d; asking its %d "
                                "client(s) for their documents (the last writes to the old "
                                "master may not have reached the new one)", shard, *now,
                                len(receivers))
                    self.on_failover(receivers)
            return where.reader, self._nodes.client(*where.owner)

        bus = Bus(reader, control, relocate=relocate, **self._options)
        for _ in range(self._epoch):
            bus.restart_streams()  # its epoch counts as this one's
        return bus

    def subscribe(self, stream_key: str, receiver: Receiver) -> RoomSubscription:
        return self._bus(stream_key).subscribe(stream_key, receiver)

    def unsubscribe(self, stream_key: str, receiver: Receiver) -> None:
        self._bus(stream_key).unsubscribe(stream_key, receiver)

    def position_at(self, stream_key: str, loaded_last_id: StreamId,
                    epoch: int | None = None) -> None:
        self._bus(stream_key).position_at(stream_key, loaded_last_id, epoch)

    def restart_streams(self) -> None:
        self._epoch += 1
        for bus in self._buses.values():
            bus.restart_streams()

    async def run(self) -> None:
        """Run the shards' readers until cancelled."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            unstarted, self._unstarted = self._unstarted, []
            for bus in unstarted:
                tg.start_soon(bus.run)
            await anyio.sleep_forever()


class ShardAppender(Appender):
    """The appender of one shard: batches on a connection to the shard's node; appends that
    the node refuses with a redirect, or that fail with the node, are sent again through the
    cluster client (which follows redirects and waits out a failover), and the appender moves
    to the node that owns the slot now."""

    def __init__(self, nodes: ClusterNodes, layout: Layout, shard: int, *,
                 timeout: float) -> None:
        self._nodes = nodes
        self._shard = shard
        self._owner = nodes.owner(shard)
        super().__init__(nodes.client(*self._owner), layout, timeout=timeout,
                         queue=layout.queues[shard])
        self._script_object = nodes.cluster.register_script(self._script)

    async def _execute(self, batch: list[tuple[str, bytes, Any]]) -> list[object]:
        results = await super()._execute(batch)
        again = [i for i, result in enumerate(results) if _follow(result)]
        if not again:
            return results
        try:
            await self._nodes.refresh()
            await self._move()
        except BusError as exc:
            log.warning("shard %d: %s", self._shard, exc)
        for i in again:
            stream_key, message, _done = batch[i]
            try:
                with anyio.fail_after(self._timeout):
                    await self._script_object(keys=[stream_key, self._queue], args=[message])
            except Exception as exc:  # this append fails with it (logged by the caller)
                if not is_redis_failure(exc):
                    log.error("shard %d: appending failed: %r", self._shard, exc, exc_info=True)
                results[i] = exc
            else:
                results[i] = None
        return results

    async def _move(self) -> None:
        owner = self._nodes.owner(self._shard)
        if owner == self._owner:
            return
        log.info("shard %d: appending on %s:%d now (was %s:%d)", self._shard, *owner,
                 *self._owner)
        await self.aclose()  # gives the connection back to the old node's pool
        self._owner = owner
        self._client = self._nodes.client(*owner)


def _follow(result: object) -> bool:
    """An append that failed with a redirect or with its node: sent again elsewhere."""
    return isinstance(result, _FOLLOWED)


class ShardedAppender:
    """The appenders of every shard, as one :class:`~ysync.appender.Appender`."""

    def __init__(self, nodes: ClusterNodes, layout: Layout, *, timeout: float) -> None:
        self._layout = layout
        self._shards = [ShardAppender(nodes, layout, shard, timeout=timeout)
                        for shard in range(layout.shards)]

    async def append(self, stream_key: str, message: bytes) -> None:
        await self._shards[self._layout.shard_of_key(stream_key)].append(stream_key, message)

    async def flush(self) -> None:
        for appender in self._shards:
            await appender.flush()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for appender in self._shards:
                tg.start_soon(appender.run)

    async def aclose(self) -> None:
        for appender in self._shards:
            await appender.aclose()
