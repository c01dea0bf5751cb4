"""ysync.cli: `ysync config` and how the CLI reports bad settings (pure: no server started)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ysync.auth import current_time_ms, generate_keypair, load_public_key, verify_token
from ysync.cli import main
from ysync.config import env_names, settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No configuration from the machine running the tests; the root logger left as it was."""
    for section, key, f, _kind in settings():
        for name in env_names(section, key, f):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("YSYNC_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def run_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["config", *args]) == 0
    out = capsys.readouterr().out
    printed: dict[str, Any] = json.loads(out)
    return printed


def test_config_prints_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    printed = run_config(capsys)
    for section, key, f, _kind in settings():
        assert printed[section][key] == f.default
    assert printed["server"]["port"] == 3002


def test_config_shows_environment_overrides(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.setenv("REDIS_PREFIX", "yr")
    monkeypatch.setenv("YSYNC_SERVER_PING_INTERVAL", "2.5")
    monkeypatch.setenv("LOG", "DEBUG")
    printed = run_config(capsys)
    assert printed["server"]["port"] == 4000
    assert printed["redis"]["prefix"] == "yr"
    assert printed["server"]["ping_interval"] == 2.5
    assert printed["log"]["level"] == "debug"


def test_flags_beat_environment_and_file(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text("[server]\nport = 1111\nhost = '0.0.0.0'\n", encoding="utf-8")
    monkeypatch.setenv("PORT", "2222")
    printed = run_config(capsys, "--server-port", "3333", "--redis-prefix", "p",
                         "--storage", "memory")
    assert printed["server"]["port"] == 3333
    assert printed["redis"]["prefix"] == "p"
    assert printed["storage"]["kind"] == "memory"
    printed = run_config(capsys, "--port", "4444")  # the short alias
    assert printed["server"]["port"] == 4444
    printed = main_config_file(capsys, str(path))
    assert (printed["server"]["port"], printed["server"]["host"]) == (2222, "0.0.0.0")


def main_config_file(capsys: pytest.CaptureFixture[str], path: str) -> dict[str, Any]:
    assert main(["--config", path, "config"]) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return printed


def test_config_redacts_secrets(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES", "postgres://ydocs:hunter2@db:5432/ydocs")
    monkeypatch.setenv("AUTH_PRIVATE_KEY", '{"kty":"EC","d":"hunter3"}')
    monkeypatch.setenv("REDIS", "redis://default:hunter4@cache:6379/0")
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    for secret in ("hunter2", "hunter3", "hunter4"):
        assert secret not in captured.out
        assert secret not in captured.err
    printed = json.loads(captured.out)
    assert printed["storage"]["postgres"] == "<secret>"
    assert printed["auth"]["private_key"] == "<secret>"
    assert printed["redis"]["url"] == "redis://default:<secret>@cache:6379/0"


def test_empty_secret_is_shown_as_empty(capsys: pytest.CaptureFixture[str]) -> None:
    printed = run_config(capsys)
    assert printed["storage"]["postgres"] == ""
    assert printed["auth"]["private_key"] == ""


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("PORT", "abc", ["server.port", "PORT", "'abc'"]),
        ("PORT", "70000", ["server.port", "PORT", "70000"]),
        ("REDIS", "http://x", ["redis.url", "http://x"]),
        ("YSYNC_STORAGE_KIND", "azure", ["storage.kind", "azure"]),
        ("LOG", "loud", ["log.level", "loud"]),
    ],
)
def test_invalid_environment_setting_exits_2(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, env: str,
                                             value: str, expected: list[str]) -> None:
    monkeypatch.setenv(env, value)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ysync: ")
    for part in expected:
        assert part in captured.err


def test_invalid_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--server-port", "abc"]) == 2
    err = capsys.readouterr().err
    assert "server.port" in err
    assert "command line" in err


def test_secret_is_not_shown_in_the_error(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES", "mysql://ydocs:hunter2@db/ydocs")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "storage.postgres" in err
    assert "hunter2" not in err


def test_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["--config", str(missing), "config"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "--server-nope", "1"])
    assert info.value.code == 2
    assert "--server-nope" in capsys.readouterr().err


# --- ysync token, and the auth pair ------------------------------------------------------------


@pytest.mark.parametrize("with_public_key", [False, True])
def test_token_needs_only_the_private_key(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch,
                                          with_public_key: bool) -> None:
    """``ysync keys generate`` prints both keys: exported together, with no permission
    callback (what only a server needs), they must not stop ``ysync token``."""
    public, private = generate_keypair()
    monkeypatch.setenv("AUTH_PRIVATE_KEY", private)
    if with_public_key:
        monkeypatch.setenv("AUTH_PUBLIC_KEY", public)
    assert main(["token", "--user", "alice", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(token, load_public_key(public), current_time_ms()).user_id == "alice"


def test_token_without_a_private_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "alice"]) == 2
    assert "AUTH_PRIVATE_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(("env", "missing"), [
    ("AUTH_PUBLIC_KEY", "AUTH_PERM_CALLBACK"),
    ("AUTH_PERM_CALLBACK", "AUTH_PUBLIC_KEY"),
])
def test_serve_refuses_half_of_the_auth_pair(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, env: str,
                                             missing: str) -> None:
    values = {"AUTH_PUBLIC_KEY": generate_keypair()[0], "AUTH_PERM_CALLBACK": "http://h/perm"}
    monkeypatch.setenv(env, values[env])
    assert main(["serve", "--port", "0"]) == 2  # refused before anything starts
    captured = capsys.readouterr()
    assert captured.out == ""
    assert missing in captured.err


# --- the Rust port's names, and log.format -----------------------------------------------------


def test_help_lists_the_rust_port_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["config", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "PORT, WS_PORT; config.toml also: [websocket] port" in out
    assert "YSYNC_REDIS_URL, REDIS, REDIS_URL" in out
    assert "GOOGLE_CLOUD_STORAGE_BUCKET; config.toml also: [storage] bucket" in out


def test_config_reads_a_rust_port_config_file_and_warns_once_logging_is_up(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text(
        "[websocket]\nport = 8000\nbuffer_capacity = 256\n[storage]\nbucket = 'docs'\n",
        encoding="utf-8")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379")
    logging.getLogger().handlers[:] = []  # as in a fresh process: the CLI sets logging up
    monkeypatch.setenv("YSYNC_LOG_FORMAT", "json")
    assert main(["config"]) == 0  # reads ./config.toml
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["server"]["port"] == 8000
    assert printed["redis"]["url"] == "redis://cache:6379"
    assert printed["storage"]["gcs_bucket"] == "docs"
    [warning] = [json.loads(line) for line in captured.err.splitlines()]
    assert warning["level"] == "warning" and "buffer_capacity" in warning["message"]
