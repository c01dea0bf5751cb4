"""ysync.config: precedence, the y-redis variable names, validation messages (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ysync.config import Config, env_names, load_config, redact_url, settings, toml_aliases
from ysync.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_config`` reads ./config.toml when no path is given: run where there is none."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, environ: dict[str, str] | None = None,
                 overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {}, overrides)
    return str(info.value)


# --- precedence --------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.server.port == 3002
    assert config.redis.prefix == "y"
    assert config.redis.task_debounce == 10_000
    assert config.redis.min_message_lifetime == 60_000
    assert config.log.level == "info"


def test_defaults_less_than_file_less_than_env_less_than_overrides(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 1111\nhost = '0.0.0.0'\n")
    assert load_config(path, {}).server.port == 1111
    env = {"PORT": "2222"}
    assert load_config(path, env).server.port == 2222
    env["YSYNC_SERVER_PORT"] = "3333"  # ysync's own name beats the y-redis one
    assert load_config(path, env).server.port == 3333
    config = load_config(path, env, {"server.port": "4444"})
    assert config.server.port == 4444
    assert config.server.host == "0.0.0.0"  # the file still counts for the other settings
    assert load_config(path, env, {"server.port": None}).server.port == 3333  # None: flag not given


def test_empty_environment_value_means_unset_as_in_y_redis(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[redis]\nurl = 'redis://file:6379'\n")
    assert load_config(path, {}).redis.url == "redis://file:6379"
    assert load_config(path, {"REDIS": ""}).redis.url == "redis://file:6379"
    assert load_config(None, {"PORT": ""}).server.port == 3002


def test_y_redis_log_pattern_star_means_debug() -> None:
    assert load_config(None, {"LOG": "*"}).log.level == "debug"


def test_s3_settings_of_y_redis_select_s3_storage() -> None:
    config = load_config(None, {"S3_ENDPOINT": "minio.local", "S3_PORT": "9000",
                                "S3_ACCESS_KEY": "a", "S3_SECRET_KEY": "b"})
    assert config.storage_kind == "s3"
    assert config.storage.s3_endpoint_url == "http://minio.local:9000"
    assert config.storage.s3_bucket == "ydocs"  # y-redis's
    assert load_config(None, {"S3_ENDPOINT": "minio.local",
                              "YSYNC_STORAGE_KIND": "memory"}).storage_kind == "memory"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[redis]\nprefix = 'fromfile'\n")
    assert load_config(None, {"YSYNC_CONFIG": str(path)}).redis.prefix == "fromfile"


def test_config_toml_in_working_directory_is_read(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    write_toml(tmp_path, "[redis]\nprefix = 'cwd'\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}).redis.prefix == "cwd"


@pytest.mark.parametrize(
    ("env", "value", "attribute", "expected"),
    [
        ("REDIS", "redis://cache:6380/1", "redis.url", "redis://cache:6380/1"),
        ("REDIS_PREFIX", "yr", "redis.prefix", "yr"),
        ("PORT", "3000", "server.port", 3000),
        ("REDIS_TASK_DEBOUNCE", "1000", "redis.task_debounce", 1000),
        ("REDIS_MIN_MESSAGE_LIFETIME", "2000", "redis.min_message_lifetime", 2000),
        ("AUTH_PRIVATE_KEY", '{"kty":"EC"}', "auth.private_key", '{"kty":"EC"}'),
        ("YDOC_UPDATE_CALLBACK", "http://localhost:4444/ydoc", "worker.update_callback",
         "http://localhost:4444/ydoc"),
        ("LOG", "debug", "log.level", "debug"),
        ("LOG", " WARNING ", "log.level", "warning"),
        ("POSTGRES", "postgres://u:p@db/ydocs", "storage.postgres", "postgres://u:p@db/ydocs"),
        ("YSYNC_DATA_DIR", "/var/lib/ysync", "embedded.data_dir", "/var/lib/ysync"),
    ],
)
def test_y_redis_environment_names(env: str, value: str, attribute: str, expected: Any) -> None:
    section, key = attribute.split(".")
    config = load_config(None, {env: value})
    assert getattr(getattr(config, section), key) == expected


def test_auth_environment_names() -> None:
    config = load_config(None, {"AUTH_PUBLIC_KEY": '{"kty":"EC","crv":"P-384"}',
                                "AUTH_PERM_CALLBACK": "http://localhost:4444/auth/perm"})
    assert config.auth.public_key == '{"kty":"EC","crv":"P-384"}'
    assert config.auth.perm_callback == "http://localhost:4444/auth/perm"


def test_every_setting_has_a_ysync_environment_name() -> None:
    environ = {}
    for section, key, f, _kind in settings():
        name = env_names(section, key, f)[0]
        assert name == f"YSYNC_{section.upper()}_{key.upper()}"
        environ[name] = str(f.default)
    assert load_config(None, environ) == Config()


def test_every_setting_is_an_override() -> None:
    overrides = {f"{section}.{key}": str(f.default) for section, key, f, _kind in settings()}
    assert load_config(None, {}, overrides) == Config()


def test_file_values_of_every_type(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
[server]
port = 4000
sync_timeout = 2
ping_interval = 0.5
compression = true
[redis]
url = "rediss://secure:6380"
read_count = 10.0
[storage]
kind = "MEMORY"
[worker]
enabled = "no"
""")
    config = load_config(path, {})
    assert config.server.port == 4000
    assert config.server.sync_timeout == 2.0
    assert isinstance(config.server.sync_timeout, float)
    assert config.server.ping_interval == 0.5
    assert config.server.compression is True
    assert config.redis.url == "rediss://secure:6380"
    assert config.redis.read_count == 10
    assert isinstance(config.redis.read_count, int)
    assert config.storage.kind == "memory"
    assert config.worker.enabled == "no"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_boolean_spellings(raw: str, expected: bool) -> None:
    assert load_config(None, {"YSYNC_SERVER_COMPRESSION": raw}).server.compression is expected


# --- derived settings --------------------------------------------------------------------------


def test_embedded_default_resolution() -> None:
    config = load_config(None, {})
    assert config.embedded_redis
    assert config.storage_kind == "filesystem"
    assert config.run_worker
    assert config.storage_path == Path("./ysync-data/storage")


def test_external_redis_resolution() -> None:
    config = load_config(None, {"REDIS": "redis://localhost:6379"})
    assert not config.embedded_redis
    with pytest.raises(ConfigError, match="storage.kind"):  # no storage of its own: refused
        config.storage_kind  # noqa: B018
    assert not config.run_worker


@pytest.mark.parametrize("redis", ["", "redis://localhost:6379"])
def test_postgres_url_selects_postgres(redis: str) -> None:
    config = load_config(None, {"REDIS": redis, "POSTGRES": "postgresql://u@db/ydocs"})
    assert config.storage_kind == "postgres"


def test_explicit_storage_kind_wins_over_postgres_url() -> None:
    config = load_config(None, {"POSTGRES": "postgres://u@db/ydocs",
                                "YSYNC_STORAGE_KIND": "memory"})
    assert config.storage_kind == "memory"


def test_gcs_and_filesystem_kinds() -> None:
    config = load_config(None, {"YSYNC_STORAGE_KIND": "gcs", "YSYNC_STORAGE_GCS_BUCKET": "b",
                                "REDIS": "redis://h"})
    assert config.storage_kind == "gcs"
    config = load_config(None, {"YSYNC_STORAGE_KIND": "filesystem",
                                "YSYNC_STORAGE_PATH": "/srv/docs", "REDIS": "redis://h"})
    assert (config.storage_kind, config.storage_path) == ("filesystem", Path("/srv/docs"))
    config = load_config(None, {"YSYNC_DATA_DIR": "/data"})
    assert config.storage_path == Path("/data/storage")


@pytest.mark.parametrize(("redis", "enabled", "expected"), [
    ("", "auto", True),
    ("redis://h", "auto", False),
    ("", "no", False),
    ("redis://h", "yes", True),
    ("redis://h", "YES", True),
])
def test_run_worker_resolution(redis: str, enabled: str, expected: bool) -> None:
    config = load_config(None, {"REDIS": redis, "YSYNC_WORKER_ENABLED": enabled})
    assert config.run_worker is expected


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"AUTH_PUBLIC_KEY": "{}", "AUTH_PERM_CALLBACK": "http://h/perm"}, True),
    ({"AUTH_PRIVATE_KEY": "{}"}, False),  # a key to mint tokens with does not turn auth on
])
def test_auth_enabled(environ: dict[str, str], expected: bool) -> None:
    assert load_config(None, environ).auth_enabled is expected


@pytest.mark.parametrize(("environ", "expected"), [
    ({"AUTH_PERM_CALLBACK": "http://h/perm"}, ["auth.public_key", "AUTH_PUBLIC_KEY"]),
    ({"AUTH_PUBLIC_KEY": "{}"}, ["auth.perm_callback", "AUTH_PERM_CALLBACK"]),
    ({"AUTH_PUBLIC_KEY": "{}", "AUTH_PRIVATE_KEY": "{}"}, ["auth.perm_callback"]),
])
def test_half_of_the_auth_pair_is_refused_where_tokens_are_checked(
    environ: dict[str, str], expected: list[str]
) -> None:
    """Loading accepts it (``ysync token`` needs only the private key, and an exported key pair
    must not stop it); ``Config.auth_enabled``, which ``ysync serve`` checks, refuses it."""
    config = load_config(None, environ)
    with pytest.raises(ConfigError) as info:
        config.auth_enabled  # noqa: B018
    for part in expected:
        assert part in str(info.value)


# --- the Rust port's names ---------------------------------------------------------------------

RUST_PORT_TOML = """
[redis]
url = "redis://cache:6379"
prefix = "rp"
task_debounce = 1000
min_message_lifetime = 2000

[websocket]
port = 8000
buffer_capacity = 256

[storage]
bucket = "yrs-docs"
"""


@pytest.mark.parametrize(("env", "value", "attribute", "expected"), [
    ("REDIS_URL", "redis://cache:6380/1", "redis.url", "redis://cache:6380/1"),
    ("WS_PORT", "8000", "server.port", 8000),
    ("GOOGLE_CLOUD_STORAGE_BUCKET", "yrs-docs", "storage.gcs_bucket", "yrs-docs"),
])
def test_rust_port_environment_names(env: str, value: str, attribute: str,
                                     expected: Any) -> None:
    section, key = attribute.split(".")
    assert getattr(getattr(load_config(None, {env: value}), section), key) == expected


def test_rust_port_config_file_works_unchanged(tmp_path: Path) -> None:
    config = load_config(write_toml(tmp_path, RUST_PORT_TOML), {})
    assert config.redis.url == "redis://cache:6379"
    assert (config.redis.prefix, config.redis.task_debounce) == ("rp", 1000)
    assert config.redis.min_message_lifetime == 2000
    assert config.server.port == 8000
    assert config.storage.gcs_bucket == "yrs-docs"
    assert config.storage_kind == "gcs"  # where the Rust port stores, with kind auto
    # buffer_capacity has no ysync meaning: accepted, ignored, and said so once logging is up
    [warning] = config.warnings
    assert "buffer_capacity" in warning and "server.send_buffer_limit" in warning
    assert load_config(None, {}).warnings == ()


@pytest.mark.parametrize("redis", ["", "redis://h:6379"])
def test_a_gcs_bucket_selects_gcs_storage_with_kind_auto(redis: str) -> None:
    for environ in ({"GOOGLE_CLOUD_STORAGE_BUCKET": "b"}, {"YSYNC_STORAGE_GCS_BUCKET": "b"}):
        assert load_config(None, {"REDIS": redis, **environ}).storage_kind == "gcs"
    config = load_config(None, {"REDIS": redis, "GOOGLE_CLOUD_STORAGE_BUCKET": "b",
                                "YSYNC_STORAGE_KIND": "memory"})
    assert config.storage_kind == "memory"  # a kind by name still wins


def test_a_gcs_bucket_and_postgres_with_kind_auto_is_ambiguous() -> None:
    environ = {"GOOGLE_CLOUD_STORAGE_BUCKET": "b", "POSTGRES": "postgres://u@db/ydocs"}
    message = config_error(environ=environ)
    assert "storage.kind" in message and "postgres" in message and "gcs" in message
    environ["YSYNC_STORAGE_KIND"] = "postgres"
    assert load_config(None, environ).storage_kind == "postgres"


def test_ysync_names_win_over_aliases_that_agree(tmp_path: Path) -> None:
    assert load_config(None, {"YSYNC_SERVER_PORT": "3000", "WS_PORT": "3000"}).server.port == 3000
    assert load_config(None, {"PORT": "3000", "WS_PORT": "03000"}).server.port == 3000  # values
    path = write_toml(tmp_path, "[server]\nport = 4000\n[websocket]\nport = 4000\n")
    assert load_config(path, {}).server.port == 4000


def test_an_alias_in_the_environment_beats_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 1111\n[redis]\nurl = 'redis://file'\n")
    config = load_config(path, {"WS_PORT": "2222", "REDIS_URL": "redis://env"})
    assert (config.server.port, config.redis.url) == (2222, "redis://env")
    assert load_config(path, {"WS_PORT": "2222"}, {"server.port": "3333"}).server.port == 3333


@pytest.mark.parametrize(("environ", "expected"), [
    ({"YSYNC_SERVER_PORT": "3000", "WS_PORT": "4000"},
     ["server.port", "environment YSYNC_SERVER_PORT", "'3000'", "environment WS_PORT", "'4000'"]),
    ({"PORT": "3000", "WS_PORT": "4000"}, ["server.port", "environment PORT", "WS_PORT"]),
    ({"REDIS": "redis://a", "REDIS_URL": "redis://:pw@b"},
     ["redis.url", "environment REDIS", "environment REDIS_URL", "redis://:<secret>@b"]),
    ({"YSYNC_STORAGE_GCS_BUCKET": "a", "GOOGLE_CLOUD_STORAGE_BUCKET": "b"},
     ["storage.gcs_bucket", "GOOGLE_CLOUD_STORAGE_BUCKET", "'a'", "'b'"]),
    ({"WS_PORT": "port"}, ["server.port", "environment WS_PORT", "'port'"]),
])
def test_an_alias_that_disagrees_in_the_same_source_is_refused(
    environ: dict[str, str], expected: list[str]
) -> None:
    message = config_error(environ=environ)
    for part in expected:
        assert part in message
    assert "pw" not in message


@pytest.mark.parametrize(("text", "expected"), [
    ("[server]\nport = 3000\n[websocket]\nport = 4000\n",
     ["server.port", "3000", "[websocket] port", "4000"]),
    ("[storage]\ngcs_bucket = 'a'\nbucket = 'b'\n", ["storage.gcs_bucket", "[storage] bucket"]),
    ("[websocket]\nport = 'x'\n", ["server.port", "[websocket] port", "'x'"]),
    ("[websocket]\nhost = '0.0.0.0'\n", ["websocket.host"]),
    ("[websocket]\nbuffer_capacity = 256\n[other]\nx = 1\n", ["[other]"]),
])
def test_bad_rust_port_file_values(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = config_error(write_toml(tmp_path, text))
    for part in expected:
        assert part in message


def test_aliases_are_listed_after_the_ysync_and_y_redis_names() -> None:
    names = {f"{section}.{key}": env_names(section, key, f) for section, key, f, _ in settings()}
    assert names["server.port"] == ("YSYNC_SERVER_PORT", "PORT", "WS_PORT")
    assert names["redis.url"] == ("YSYNC_REDIS_URL", "REDIS", "REDIS_URL")
    assert names["storage.gcs_bucket"] == ("YSYNC_STORAGE_GCS_BUCKET",
                                           "GOOGLE_CLOUD_STORAGE_BUCKET")
    assert toml_aliases() == {"websocket.port": "server.port",
                              "storage.bucket": "storage.gcs_bucket"}


# --- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PORT": "abc"}, ["server.port", "environment PORT", "'abc'"]),
        ({"PORT": "70000"}, ["server.port", "environment PORT", "at most 65535", "'70000'"]),
        ({"PORT": "-1"}, ["server.port", "at least 0", "'-1'"]),
        ({"PORT": "3002.5"}, ["server.port", "'3002.5'"]),
        ({"YSYNC_SERVER_PORT": "x1"}, ["server.port", "environment YSYNC_SERVER_PORT", "'x1'"]),
        ({"REDIS": "http://x"}, ["redis.url", "'http://x'"]),
        ({"YSYNC_CONFIG": "/nonexistent/ysync.toml"}, ["/nonexistent/ysync.toml"]),
        ({"REDIS_PREFIX": "a:room:b"}, ["redis.prefix", "'a:room:b'"]),
        ({"REDIS_TASK_DEBOUNCE": "soon"}, ["redis.task_debounce", "REDIS_TASK_DEBOUNCE", "'soon'"]),
        ({"REDIS_MIN_MESSAGE_LIFETIME": "-5"}, ["redis.min_message_lifetime", "'-5'"]),
        ({"YSYNC_STORAGE_KIND": "azure"}, ["storage.kind", "YSYNC_STORAGE_KIND", "'azure'",
                                           "gcs"]),
        ({"LOG": "loud"}, ["log.level", "environment LOG", "'loud'", "debug"]),
        ({"YSYNC_SERVER_COMPRESSION": "maybe"}, ["server.compression", "'maybe'"]),
        ({"YSYNC_SERVER_PING_TIMEOUT": "nan"}, ["server.ping_timeout", "'nan'"]),
        ({"YSYNC_SERVER_SYNC_TIMEOUT": "inf"}, ["server.sync_timeout", "'inf'"]),
        ({"YSYNC_SERVER_SYNC_TIMEOUT": "0.01"}, ["server.sync_timeout", "at least 0.1"]),
        ({"YSYNC_REDIS_READ_COUNT": "0"}, ["redis.read_count", "'0'"]),
        ({"YSYNC_EMBEDDED_APPENDFSYNC": "no"}, ["embedded.appendfsync", "'no'"]),
        ({"YSYNC_WORKER_ENABLED": "maybe"}, ["worker.enabled", "'maybe'"]),
        ({"YDOC_UPDATE_CALLBACK": "ftp://h/x"}, ["worker.update_callback", "'ftp://h/x'"]),
        ({"YSYNC_STORAGE_KIND": "gcs"}, ["storage.gcs_bucket"]),
        ({"YSYNC_STORAGE_KIND": "postgres"}, ["storage.postgres", "POSTGRES"]),
        ({"POSTGRES": "mysql://db"}, ["storage.postgres", "POSTGRES"]),
    ],
)
def test_bad_environment_value_names_the_setting(environ: dict[str, str],
                                                 expected: list[str]) -> None:
    message = config_error(environ=environ)
    for part in expected:
        assert part in message


def test_bad_override_names_the_command_line() -> None:
    message = config_error(overrides={"server.port": "abc"})
    assert "server.port" in message
    assert "command line" in message
    assert "'abc'" in message


def test_unknown_override() -> None:
    assert "server.nope" in config_error(overrides={"server.nope": "1"})
    assert "nosection.port" in config_error(overrides={"nosection.port": "1"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 'abc'\n", ["server.port", "config file", "'abc'"]),
        ("[server]\nport = 70000\n", ["server.port", "config file", "70000"]),
        ("[server]\nport = true\n", ["server.port", "True"]),
        ("[server]\nport = 1.5\n", ["server.port", "1.5"]),
        ("[server]\nhost = 5\n", ["server.host", "expected a string"]),
        ("[server]\ncompression = 3\n", ["server.compression", "3"]),
        ("[server]\nsync_timeout = nan\n", ["server.sync_timeout", "nan"]),
        ("[storage]\nkind = 'azure'\n", ["storage.kind", "'azure'"]),
        ("[log]\nlevel = 'loud'\n", ["log.level", "'loud'"]),
        ("[nosuch]\nx = 1\n", ["[nosuch]"]),
        ("port = 3002\n", ["[port]"]),
        ("[server]\nprot = 3002\n", ["server.prot"]),
        ("[server\nport = 1\n", ["config file"]),
        ("[server]\nport = \n", ["config file"]),
        ("[server]\nport = 1\nport = 2\n", ["config file"]),
    ],
)
def test_bad_file_value_names_the_setting(tmp_path: Path, text: str,
                                          expected: list[str]) -> None:
    path = write_toml(tmp_path, text)
    message = config_error(path)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = config_error(path)
    assert str(path) in message
    assert "No such file" in message


def test_missing_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert str(path) in config_error(environ={"YSYNC_CONFIG": str(path)})


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    assert str(tmp_path) in config_error(tmp_path)


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "secret"),
    [
        ({"POSTGRES": "mysql://user:hunter2@db/ydocs"}, "hunter2"),
        ({"YSYNC_STORAGE_KIND": "postgres", "POSTGRES": "pg://hunter2"}, "hunter2"),
        ({"REDIS": "http://:hunter2@cache:6379"}, "hunter2"),
        ({"REDIS": "http://admin:hunter2@cache:6379/0"}, "hunter2"),
        ({"YDOC_UPDATE_CALLBACK": "ftp://bob:hunter2@h/x"}, "hunter2"),
        ({"YSYNC_SERVER_PORT": "http://u:hunter2@h"}, "hunter2"),
    ],
)
def test_error_messages_do_not_show_secrets(environ: dict[str, str], secret: str) -> None:
    message = config_error(environ=environ)
    assert secret not in message


def test_bad_url_message_keeps_everything_but_the_password() -> None:
    message = config_error(environ={"REDIS": "http://admin:hunter2@cache:6379/0"})
    assert "http://admin:<secret>@cache:6379/0" in message


@pytest.mark.parametrize("text", [
    "[auth]\nprivate_key = 987654321\n",
    "[storage]\npostgres = 987654321\n",
])
def test_secret_of_wrong_type_is_not_shown(tmp_path: Path, text: str) -> None:
    message = config_error(write_toml(tmp_path, text))
    assert "987654321" not in message
    assert "<secret>" in message


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://:pw@h:6379/0", "redis://:<secret>@h:6379/0"),
    ("redis://user:pw@h/0", "redis://user:<secret>@h/0"),
    ("postgres://u:p%40ss@db/x?sslmode=require", "postgres://u:<secret>@db/x?sslmode=require"),
    ("http://u:p@h/path@x?q=a:b@c", "http://u:<secret>@h/path@x?q=a:b@c"),
    ("http://user@h/x", "http://user@h/x"),
    ("redis://h:6379", "redis://h:6379"),
    ("", ""),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- the repository's config.toml --------------------------------------------------------------


def test_repository_config_toml_equals_the_defaults() -> None:
    assert load_config(REPO_CONFIG, {}) == Config()


def test_repository_config_toml_is_generated_from_the_code() -> None:
    """Every setting documented with its current default and help: regenerate with
    ``python scripts/config_toml.py > config.toml``."""
    import importlib.util

    script = REPO_CONFIG.parent / "scripts" / "config_toml.py"
    spec = importlib.util.spec_from_file_location("config_toml", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert REPO_CONFIG.read_text() == module.render()
