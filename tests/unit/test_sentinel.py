"""redis+sentinel:// URLs: parsed, refused with the setting named, redacted, and turned into
redis-py's Sentinel pools (no network: the pools connect on first use)."""

from __future__ import annotations

import os

import pytest

from ysync.config import load_config, redact_url
from ysync.errors import ConfigError
from ysync.redis_clients import redis_client, redis_options, redis_pool
from ysync.sentinel import DEFAULT_SENTINEL_PORT, SentinelUrl, parse_sentinel_url
from ysync.sentinel_pool import (
    BlockingSentinelPool,
    FollowingConnection,
    FollowingSSLConnection,
    SentinelPool,
    follow_master,
)

pytestmark = [pytest.mark.anyio]


def load(**env: str):  # type: ignore[no-untyped-def]
    return load_config(os.devnull, environ=env)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+sentinel://s1/mymaster",
     SentinelUrl((("s1", DEFAULT_SENTINEL_PORT),), "mymaster")),
    ("redis+sentinel://:pw@s1:26380,s2,10.0.0.3:5000/cache/3",
     SentinelUrl((("s1", 26380), ("s2", 26379), ("10.0.0.3", 5000)), "cache", 3,
                 password="pw")),
    ("rediss+sentinel://ysync:p%40ss%2Fw@[::1]:26379,[fd00::2]/svc%2Fa",
     SentinelUrl((("::1", 26379), ("fd00::2", 26379)), "svc/a", 0, "ysync", "p@ss/w",
                 tls=True)),
    ("redis+sentinel://s1/m/0?sentinel_password=s%26p&sentinel_username=watcher",
     SentinelUrl((("s1", 26379),), "m", 0, sentinel_username="watcher",
                 sentinel_password="s&p")),
    ("redis+sentinel://user@s1/m", SentinelUrl((("s1", 26379),), "m", username="user")),
])
def test_parse(url: str, expected: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == expected
    assert load(REDIS=url).redis.url == url  # accepted by the configuration


def test_repr_hides_the_passwords() -> None:
    shown = repr(parse_sentinel_url("redis+sentinel://:master-pw@s/m?sentinel_password=s-pw"))
    assert "master-pw" not in shown and "s-pw" not in shown
    assert "password=<secret>" in shown and "sentinel_password=<secret>" in shown


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://s1", "no service name"),
    ("redis+sentinel://s1/", "no service name"),
    ("redis+sentinel://s1:26379,s2:26379", "no service name"),
    ("redis+sentinel:///mymaster", "no Sentinel address"),
    ("redis+sentinel://s1,,s2/m", "a Sentinel address without a host"),
    ("redis+sentinel://:26379/m", "a Sentinel address without a host"),
    ("redis+sentinel://s1:0/m", "bad port '0' of Sentinel 's1'"),
    ("redis+sentinel://s1:65536/m", "bad port '65536'"),
    ("redis+sentinel://s1:port/m", "bad port 'port'"),
    ("redis+sentinel://s1:/m", "bad port ''"),
    ("redis+sentinel://s1:２６３７９/m", "bad port"),  # digits, but not ASCII ones
    ("redis+sentinel://[::1/m", "bad Sentinel address '[::1'"),
    ("redis+sentinel://[::1]x/m", "bad Sentinel address"),
    ("redis+sentinel://s1/m/x", "only a database number may follow"),
    ("redis+sentinel://s1/m/0/1", "only a database number may follow"),
    ("redis+sentinel://s1/m?password=x", "unknown option 'password'"),
    ("redis+sentinel://s1/m?sentinel_password", "not name=value"),
])
def test_malformed_urls_are_refused_naming_the_setting(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(REDIS=url)
    message = str(caught.value)
    assert message.startswith("setting redis.url (REDIS): "), message
    assert reason in message
    assert "the form is redis+sentinel://" in message


def test_a_refused_url_is_shown_without_its_passwords() -> None:
    with pytest.raises(ConfigError) as caught:
        load(REDIS="redis+sentinel://:master-pw@s1:99999/m?sentinel_password=s-pw")
    message = str(caught.value)
    assert "master-pw" not in message and "s-pw" not in message
    assert "'redis+sentinel://:<secret>@s1:99999/m?sentinel_password=<secret>'" in message


def test_sentinel_and_cluster_do_not_mix() -> None:
    with pytest.raises(ConfigError, match="setting redis.cluster"):
        load(REDIS="redis+sentinel://s/m", YSYNC_REDIS_CLUSTER="yes")


def test_other_schemes_are_still_refused() -> None:
    with pytest.raises(ConfigError, match="redis[+]sentinel://, got 'sentinel://s/m'"):
        load(REDIS="sentinel://s/m")


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+sentinel://:pw@s1,s2/m?sentinel_password=sp",
     "redis+sentinel://:<secret>@s1,s2/m?sentinel_password=<secret>"),
    ("rediss+sentinel://u:pw@s1/m/1", "rediss+sentinel://u:<secret>@s1/m/1"),
    ("redis+sentinel://s1/m?sentinel_username=u&sentinel_password=sp",
     "redis+sentinel://s1/m?sentinel_username=u&sentinel_password=<secret>"),
    ("redis://h/0?password=x", "redis://h/0?password=<secret>"),
])
def test_redact(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_tls_settings_need_rediss_sentinel() -> None:
    with pytest.raises(ConfigError, match="TLS needs a rediss:// redis.url"):
        load(REDIS="redis+sentinel://s/m", YSYNC_REDIS_TLS_VERIFY="ca")
    config = load(REDIS="rediss+sentinel://s/m", YSYNC_REDIS_TLS_VERIFY="none")
    assert redis_options(config.redis.url, config) == {"ssl_cert_reqs": "none",
                                                       "ssl_check_hostname": False}
    assert any("not checked" in warning for warning in config.warnings)
    assert redis_options("redis+sentinel://s/m", load(REDIS="redis+sentinel://s/m")) == {}


async def test_a_client_reaches_the_master_through_the_sentinels() -> None:
    url = "redis+sentinel://:pw@s1:1,s2:2/svc/4?sentinel_password=sp"
    config = load(REDIS=url, YSYNC_REDIS_TIMEOUT="3")
    client = redis_client(url, config, single_connection_client=True)
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelPool) and client.single_connection_client
        assert pool.service_name == "svc" and pool.is_master
        kwargs = pool.connection_kwargs
        assert kwargs["db"] == 4 and kwargs["password"] == "pw"
        assert kwargs["socket_timeout"] == 3 and "single_connection_client" not in kwargs
        assert pool.connection_class is FollowingConnection
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
            ("s1", 1), ("s2", 2)]
        # the Sentinels' own password, not the master's
        assert all(s.connection_pool.connection_kwargs["password"] == "sp" for s in sentinels)
        # a Sentinel that does not answer is skipped at once, not retried ten times
        assert all(s.connection_pool.connection_kwargs["retry"].get_retries() == 0
                   for s in sentinels)
    finally:
        await client.aclose()


async def test_a_pool_over_tls_is_bounded_and_uses_tls_to_the_sentinels_too() -> None:
    url = "rediss+sentinel://s1/svc"
    config = load(REDIS=url, YSYNC_REDIS_TLS_VERIFY="ca", YSYNC_REDIS_MAX_CONNECTIONS="5")
    pool = redis_pool(url, config)
    try:
        assert isinstance(pool, BlockingSentinelPool) and pool.max_connections == 5
        assert pool.connection_class is FollowingSSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert pool.connection_kwargs.get("password") is None
        sentinel = pool.sentinel_manager.sentinels[0]
        assert sentinel.connection_pool.connection_kwargs["ssl_check_hostname"] is False
        assert sentinel.connection_pool.connection_kwargs.get("password") is None
        assert sentinel.connection_pool.connection_class.__name__ == "SSLConnection"
    finally:
        await pool.aclose()


async def test_following_needs_sentinel_clients() -> None:
    config = load(REDIS="redis://127.0.0.1:1/0")
    client = redis_client(config.redis.url, config)
    try:
        with pytest.raises(ValueError, match="redis[+]sentinel://"):
            await follow_master([client])
    finally:
        await client.aclose()
