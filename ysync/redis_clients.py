"""The Redis clients ysync opens, all with the same timeouts and TLS settings.

Every process (server, worker, operator commands) opens its clients here, so that a
``rediss://`` URL with ``redis.tls_*`` settings reaches every connection. The TLS settings are
checked when the configuration is loaded (:mod:`ysync.config`); here they only become redis-py's
``ssl_*`` keyword arguments.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from ysync.config import Config

#: redis.tls_verify -> (redis-py's ssl_cert_reqs, ssl_check_hostname)
_VERIFY = {"full": ("required", True), "ca": ("required", False), "none": ("none", False)}


def redis_options(url: str, config: Config) -> dict[str, Any]:
    """redis-py connection keyword arguments for ``url``: the TLS ones for a ``rediss://`` URL,
    none for ``redis://`` and ``unix://`` (whose connections take no ``ssl_*`` argument)."""
    if not url.startswith("rediss://"):
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
    return aioredis.Redis.from_url(url, **{
        "socket_timeout": config.redis.timeout,
        "socket_connect_timeout": config.redis.timeout,
        **redis_options(url, config), **options})


def redis_pool(url: str, config: Config, **options: Any) -> aioredis.BlockingConnectionPool:
    """A bounded pool of ``url`` (``redis.max_connections``) that makes a burst wait for a
    connection, up to ``redis.timeout``, instead of failing with "Too many connections"."""
    return aioredis.BlockingConnectionPool.from_url(url, **{
        "max_connections": config.redis.max_connections, "timeout": config.redis.timeout,
        "socket_timeout": config.redis.timeout,
        "socket_connect_timeout": config.redis.timeout,
        **redis_options(url, config), **options})
