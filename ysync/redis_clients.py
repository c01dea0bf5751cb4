"""The Redis clients ysync opens, all with the same timeouts and TLS settings.

Every process (server, worker, operator commands) opens its clients here, so that a
``rediss://`` URL with ``redis.tls_*`` settings reaches every connection, and a
``redis+sentinel://`` URL the current master (:mod:`ysync.sentinel_pool`). The TLS settings
are checked when the configuration is loaded (:mod:`ysync.config`); here they only become
redis-py's ``ssl_*`` keyword arguments.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from ysync.config import Config
from ysync.errors import BusError
from ysync.sentinel import is_sentinel_url
from ysync.sentinel_pool import sentinel_client, sentinel_pool

#: redis.tls_verify -> (redis-py's ssl_cert_reqs, ssl_check_hostname)
_VERIFY = {"full": ("required", True), "ca": ("required", False), "none": ("none", False)}


def redis_options(url: str, config: Config) -> dict[str, Any]:
    """redis-py connection keyword arguments for ``url``: the TLS ones for a ``rediss://`` or
    ``rediss+sentinel://`` URL, none for ``redis://``, ``redis+sentinel://`` and ``unix://``
    (whose connections take no ``ssl_*`` argument)."""
    if not url.startswith(("rediss://", "rediss+sentinel://")):
        return {}
    tls = config.redis
    cert_reqs, check_hostname = _VERIFY[tls.tls_verify]
    options: dict[str, Any] = {"ssl_cert_reqs": cert_reqs, "ssl_check_hostname": check_hostname}
    if tls.tls_ca_file:
        options["ssl_ca_certs"] = tls.tls_ca_file
    if tls.tls_cert_file:
        options["ssl_certfile"] = tls.tls_cert_file
        options["ssl_keyfile"] = tls.tls_key_file or None
    return options


def redis_client(url: str, config: Config, **options: Any) -> aioredis.Redis:
    """A client of ``url`` with the command timeout ``redis.timeout`` (for the socket and for
    connecting) and the TLS settings; ``options`` (redis-py's) add to or override them."""
    options = {"socket_timeout": config.redis.timeout,
               "socket_connect_timeout": config.redis.timeout,
               **redis_options(url, config), **options}
    if is_sentinel_url(url):  # the master behind Sentinel (ysync.sentinel)
        return sentinel_client(url, options)
    return aioredis.Redis.from_url(url, **options)


def redis_pool(url: str, config: Config, **options: Any) -> aioredis.BlockingConnectionPool:
    """A bounded pool of ``url`` (``redis.max_connections``) that makes a burst wait for a
    connection, up to ``redis.timeout``, instead of failing with "Too many connections"."""
    options = {"max_connections": config.redis.max_connections, "timeout": config.redis.timeout,
               "socket_timeout": config.redis.timeout,
               "socket_connect_timeout": config.redis.timeout,
               **redis_options(url, config), **options}
    if is_sentinel_url(url):
        return sentinel_pool(url, options)
    return aioredis.BlockingConnectionPool.from_url(url, **options)


#: A client of one Redis (or its primary) or of a Redis Cluster (``redis.cluster``).
RedisClient = aioredis.Redis | RedisCluster


def any_redis_client(url: str, config: Config) -> RedisClient:
    """:func:`redis_client`, or on a Redis Cluster redis-py's cluster client
    (:func:`ysync.cluster.cluster_client`): for the commands of the worker and of operators."""
    if config.redis_cluster:
        from ysync.cluster import cluster_client

        return cluster_client(url, config)
    return redis_client(url, config)


def is_redis_failure(exc: BaseException) -> bool:
    """True for a failure of Redis or of the way to it (redis-py's errors, its cluster
    client's, the socket's); False for anything unexpected.

    Loops that must outlive an outage (the stream reader, the appender, the control listener,
    the epoch checks) retry on both, and log the unexpected ones with their traceback: redis-py's
    cluster client closes every connection when the cluster reports itself down, and a command
    in flight on one of them then fails with an AttributeError of the library's.
    """
    return isinstance(exc, (redis_errors.RedisError, redis_errors.RedisClusterException,
                            OSError, TimeoutError, BusError))
