"""A Redis behind Sentinel: the ``redis+sentinel://`` URL.

::

    redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/<service_name>[/<db>]
        [?sentinel_username=...&sentinel_password=...]

The hosts are the Sentinels (port 26379 unless given; ``[::1]:26379`` for IPv6), the path names
the service (``sentinel monitor <service_name> ...``) and the database. The user and password
are the master's; the Sentinels are reached without credentials unless ``sentinel_username``
or ``sentinel_password`` is given (``requirepass`` in a Sentinel's configuration).
``rediss+sentinel://`` reaches the Sentinels and the master over TLS, with the ``redis.tls_*``
settings. Percent-encode ``@``, ``/``, ``,`` and ``:`` in the names and passwords.

Parsing is pure (:func:`parse_sentinel_url`); the clients are made in
:mod:`ysync.sentinel_pool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from ysync.errors import ConfigError

#: The schemes of a Redis behind Sentinel: plain, and TLS.
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")

#: The port of a Sentinel whose port the URL does not give.
DEFAULT_SENTINEL_PORT = 26379

#: The URL's query options.
QUERY_OPTIONS = ("sentinel_username", "sentinel_password")

_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<service_name>[/<db>]"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """What a ``redis+sentinel://`` URL names. ``repr`` hides the passwords."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        hidden = {name: "<secret>" if getattr(self, name) is not None else None
                  for name in ("password", "sentinel_password")}
        return (f"SentinelUrl(sentinels={self.sentinels!r}, service_name={self.service_name!r}, "
                f"db={self.db}, username={self.username!r}, password={hidden['password']}, "
                f"sentinel_username={self.sentinel_username!r}, "
                f"sentinel_password={hidden['sentinel_password']}, tls={self.tls})")


def is_sentinel_url(url: str) -> bool:
    """True for a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return url.startswith(SENTINEL_SCHEMES)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The Sentinels, service, database and credentials of ``url``. Raises ConfigError saying
    what is wrong, without the URL (:mod:`ysync.config` names the setting and shows the URL
    with its passwords hidden)."""
    scheme, _sep, rest = url.partition("://")
    if scheme not in ("redis+sentinel", "rediss+sentinel"):
        raise _refused(f"expected {' or '.join(SENTINEL_SCHEMES)}")
    rest, _hash, _fragment = rest.partition("#")
    rest, _q, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise _refused("no Sentinel address (host[:port],...)")
    sentinels = tuple(_sentinel_address(part) for part in hosts.split(","))
    segments = path.split("/") if slash else []
    if not segments or not segments[0]:
        raise _refused("no service name (the name in 'sentinel monitor <name> ...')")
    if len(segments) > 2 or (len(segments) == 2 and not _is_number(segments[1])):
        raise _refused("after the service name, only a database number may follow")
    options = _query_options(query)
    return SentinelUrl(sentinels, unquote(segments[0]), int(segments[1]) if len(segments) == 2
                       else 0, username, password, options.get("sentinel_username"),
                       options.get("sentinel_password"), tls=scheme == "rediss+sentinel")


def _sentinel_address(part: str) -> tuple[str, int]:
    if part.startswith("["):  # [IPv6]:port
        host, bracket, after = part[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _refused(f"bad Sentinel address {part!r}")
        port_text = after[1:] if after else ""
        has_port = bool(after)
    else:
        host, colon, port_text = part.partition(":")
        has_port = bool(colon)
    if not host:
        raise _refused(f"a Sentinel address without a host: {part!r}")
    if not has_port:
        return host, DEFAULT_SENTINEL_PORT
    if not _is_number(port_text) or not 0 < int(port_text) < 65536:
        raise _refused(f"bad port {port_text!r} of Sentinel {host!r} (1 to 65535)")
    return host, int(port_text)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # int() takes other scripts' digits too


def _query_options(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _refused("a query that is not name=value&...") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in QUERY_OPTIONS:
            raise _refused(f"unknown option {name!r} (known: {', '.join(QUERY_OPTIONS)})")
        options[name] = value
    return options


def _refused(reason: str) -> ConfigError:
    # without the URL, which holds passwords: the configuration check adds it, redacted
    return ConfigError(f"{reason}; the form is {_FORM}")
