"""Redis clients of a master behind Sentinel, that follow it through failovers.

redis-py's :class:`~redis.asyncio.sentinel.SentinelConnectionPool` asks the Sentinels for the
master's address whenever the pool makes a connection. Two gaps remain (redis-py 8.1,
Redis 7.0), both closed here:

- A connection that broke and is used again reconnects, in ``send_packed_command``, to the
  address it had, not to the new master. ysync's stream reader and appender keep their
  connections (:mod:`ysync.bus`, :mod:`ysync.appender`), so they would write to a demoted
  master for ever. :class:`FollowingConnection` reconnects through the Sentinels.
- A failover does not break the connections to the old master: the Sentinels reconfigure it as
  a replica, which closes its clients, only about ten seconds after they switched to the new
  master. Until then the old master accepts writes that the new one never receives.
  :func:`follow_master` listens for the Sentinels' ``+switch-master`` and makes every
  connection of the clients it is given leave the old master at once
  (:meth:`FollowingConnection.leave`), so that each reconnects to the new one.

Replication is asynchronous: even the graceful ``SENTINEL FAILOVER`` promotes a replica that
may lack the last writes of the old master. :func:`follow_master` therefore awaits an
``on_failover`` callback after each switch (the server asks every connected client to send its
document again, :func:`ysync.server.recover_lost_data`).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from ysync.sentinel import SentinelUrl, parse_sentinel_url

log = logging.getLogger(__name__)

#: Seconds between two questions to the Sentinels about the master, besides their events.
CHECK_INTERVAL = 5.0

#: The Sentinels' channel that announces a failover: ``<name> <old ip> <old port> <new ip>
#: <new port>``.
SWITCH_CHANNEL = "+switch-master"

#: Keyword arguments of redis-py's ``Redis`` client, not of its connections.
_CLIENT_OPTIONS = ("single_connection_client",)


class Sentinels(Sentinel):
    """redis-py's Sentinel client, whose "no master" error names each Sentinel by its address
    and says what it answered (redis-py's holds the repr of every client, kilobytes long)."""

    async def discover_master(self, service_name: str) -> tuple[Any, Any]:
        said = []
        for i, sentinel in enumerate(self.sentinels):
            kwargs = sentinel.connection_pool.connection_kwargs
            where = f"{kwargs.get('host')}:{kwargs.get('port')}"
            try:
                masters: Any = await sentinel.sentinel_masters()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                said.append(f"{where}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                # the one that answered is asked first next time, as redis-py does
                self.sentinels[0], self.sentinels[i] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            said.append(f"{where}: " + ("no such service" if not state else
                                        "its master is down or failing over"))
        raise MasterNotFoundError(f"no Sentinel names a master for {service_name!r} "
                                  f"({'; '.join(said)})")


class FollowingConnection(SentinelManagedConnection):
    """A connection to the master that, whenever it connects again, asks the Sentinels where
    the master is (redis-py's own reconnects to the address it had), and that leaves a master
    the Sentinels replaced (:meth:`leave`)."""

    _left = False  # told to leave its master: the next command fails, then it reconnects

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._left:
            self._left = False
            if self.is_connected:
                await self.disconnect()
                raise redis_errors.ConnectionError("the Redis master moved; connecting again")
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)

    def leave(self, master: tuple[str, int]) -> None:
        """The Sentinels named ``master``: unless connected to it, fail the read in flight (a
        blocked XREAD, a subscription) and the next command with ConnectionError, so that the
        task using the connection disconnects it and connects to ``master``. Safe from any
        task: the connection itself is closed only by its user (a ``disconnect`` from another
        task can cut a command in half, and an aborted transport makes uvloop raise)."""
        if not self.is_connected or (self.host, self.port) == master:
            return
        self._left = True
        reader = self._reader
        if reader is not None:  # its user reads this error (now or at its next read)
            reader.set_exception(ConnectionResetError(
                f"the Redis master moved to {master[0]}:{master[1]}"))


class FollowingSSLConnection(FollowingConnection, SentinelManagedSSLConnection):
    """:class:`FollowingConnection` over TLS."""


class _Pool(SentinelConnectionPool):
    """A pool of connections to the master of one Sentinel service; closing it closes the
    connections to the Sentinels too (each pool has a :class:`Sentinel` of its own)."""

    sentinel_manager: Sentinel
    service_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # every connection, in use or not

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        self._made.add(connection)
        return connection

    async def follow(self, master: tuple[str, int], *, moved: bool) -> None:
        """The Sentinels name ``master``: tell every connection to another address to leave it
        (:meth:`FollowingConnection.leave`); when the master ``moved``, close the idle ones
        first (as redis-py does when it notices)."""
        if moved:
            await self.disconnect(inuse_connections=False)
        for connection in list(self._made):
            if isinstance(connection, FollowingConnection):
                connection.leave(master)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class SentinelPool(_Pool):
    """An unbounded pool (what ``Redis.from_url`` makes for a ``redis://`` URL)."""


class BlockingSentinelPool(_Pool, aioredis.BlockingConnectionPool):
    """A bounded pool whose callers wait for a free connection, as
    :class:`~redis.asyncio.BlockingConnectionPool` does."""


def _sentinel(url: SentinelUrl, options: dict[str, Any]) -> Sentinel:
    """The Sentinels of ``url``, reached with the socket and TLS ``options``."""
    sentinel_options = {key: value for key, value in options.items()
                        if key.startswith(("socket_", "ssl_"))}
    # no retries: a Sentinel that does not answer is skipped for the next one at once (redis-py
    # would retry it ten times, each up to redis.timeout, before asking another)
    sentinel_options["retry"] = Retry(NoBackoff(), 0)
    if url.tls:
        sentinel_options["ssl"] = True
    if url.sentinel_username is not None:
        sentinel_options["username"] = url.sentinel_username
    if url.sentinel_password is not None:
        sentinel_options["password"] = url.sentinel_password
    return Sentinels(list(url.sentinels),  # type: ignore[no-untyped-call]
                     sentinel_kwargs=sentinel_options)


def _pool(url: str, options: dict[str, Any], pool_class: type[_Pool]) -> Any:
    parsed = parse_sentinel_url(url)
    connection_options = dict(options)
    connection_options["db"] = parsed.db
    if parsed.username is not None:
        connection_options["username"] = parsed.username
    if parsed.password is not None:
        connection_options["password"] = parsed.password
    connection_options["connection_class"] = (FollowingSSLConnection if parsed.tls
                                              else FollowingConnection)
    return pool_class(parsed.service_name, _sentinel(parsed, options), is_master=True,
                      **connection_options)


def sentinel_pool(url: str, options: dict[str, Any]) -> BlockingSentinelPool:
    """A bounded pool of connections to the master that ``url`` (``redis+sentinel://``) names,
    with redis-py's connection ``options`` and ``max_connections`` and ``timeout`` (of the
    wait for a free connection)."""
    pool: BlockingSentinelPool = _pool(url, options, BlockingSentinelPool)
    return pool


def sentinel_client(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """A client of the master that ``url`` names, with redis-py's ``options``; it owns its pool
    (``aclose`` closes it)."""
    connection_options = {k: v for k, v in options.items() if k not in _CLIENT_OPTIONS}
    pool: SentinelPool = _pool(url, connection_options, SentinelPool)
    client = aioredis.Redis(connection_pool=pool, single_connection_client=bool(
        options.get("single_connection_client")))
    client.auto_close_connection_pool = True  # as Redis.from_pool does
    return client


def _pools(clients: Sequence[aioredis.Redis]) -> list[_Pool]:
    pools = [client.connection_pool for client in clients]
    ours = [pool for pool in pools if isinstance(pool, _Pool)]
    if not ours or len(ours) != len(pools):
        raise ValueError("follow_master needs clients made from a redis+sentinel:// URL")
    return ours


async def follow_master(clients: Sequence[aioredis.Redis],
                        on_failover: Callable[[], Awaitable[None]] | None = None, *,
                        interval: float = CHECK_INTERVAL) -> None:
    """Until cancelled: whenever the Sentinels name another master for the service of
    ``clients`` (made by :func:`sentinel_client` or on a :func:`sentinel_pool`), make every
    connection of the clients, idle or in use, leave the old master, so that each reconnects
    to the new one; then await ``on_failover``. Listens to ``+switch-master`` on one Sentinel
    at a time and asks every ``interval`` seconds besides, so that a missed event is noticed
    too. Raises ValueError for clients of another kind of URL."""
    pools = _pools(clients)
    manager, service = pools[0].sentinel_manager, pools[0].service_name
    known: tuple[str, int] | None = None
    failures = turn = 0
    while True:
        sentinel = manager.sentinels[turn % len(manager.sentinels)]
        pubsub = sentinel.pubsub()
        try:
            await pubsub.subscribe(SWITCH_CHANNEL)
            while True:
                master = await _master(manager, service)
                failures = 0
                if master is not None:
                    moved = known is not None and master != known
                    if known is not None and moved:
                        log.warning("the Sentinels moved the Redis master of %r from %s:%d to "
                                    "%s:%d: reconnecting", service, *known, *master)
                    # also when it did not move: a connection made while it moved may have
                    # reached the old master
                    for pool in pools:
                        await pool.follow(master, moved=moved)
                    known = master
                    if moved and on_failover is not None:
                        await on_failover()
                await _switch_announced(pubsub, service, interval if master else 0.5)
        except (redis_errors.RedisError, OSError) as exc:
            failures += 1
            turn += 1  # the next Sentinel
            if failures == 1:
                log.warning("listening to the Redis Sentinels failed (%s); retrying", exc)
            await anyio.sleep(min(interval, 0.1 * math.pow(2, failures)))
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _master(manager: Sentinel, service: str) -> tuple[str, int] | None:
    """The master's address as the Sentinels say; ``None`` while none names one (a failover
    in progress, the master down)."""
    try:
        ip, port = await manager.discover_master(service)
    except redis_errors.ConnectionError as exc:  # MasterNotFoundError is one
        log.debug("no Redis master for %r: %s", service, exc)
        return None
    host = ip.decode() if isinstance(ip, bytes) else str(ip)
    return host, int(port)


async def _switch_announced(pubsub: Any, service: str, within: float) -> None:
    """Return when a Sentinel announces a switch of ``service``, or after ``within`` s."""
    with anyio.move_on_after(within):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=within)
            if message is None:
                continue
            data = message.get("data")
            text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
            if text.split(" ", 1)[0] == service:
                return
