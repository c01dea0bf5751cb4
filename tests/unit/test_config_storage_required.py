"""A storage is required with an external Redis; memory only by name (pure: nothing started)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.cli import main as worker_main
from ysync.cli import main as ysync_main
from ysync.config import env_names, load_config, settings
from ysync.errors import ConfigError
from ysync.storage.factory import open_storage
from ysync.storage.memory import MemoryStorage

REDIS = "redis://127.0.0.1:1"  # never reached: the refusal comes first


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for section, key, f, _kind in settings():
        for name in env_names(section, key, f):
            monkeypatch.delenv(name, raising=False)
    for name in ("YSYNC_CONFIG", "S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_external_redis_without_storage_is_refused() -> None:
    config = load_config(None, {"REDIS": REDIS})  # loading works: `ysync kick` needs no storage
    assert config.storage.kind == "auto"
    with pytest.raises(ConfigError) as caught:
        config.storage_kind  # noqa: B018
    text = str(caught.value)
    for part in ("storage.kind", "YSYNC_STORAGE_KIND", "REDIS", "POSTGRES",
                 "YSYNC_STORAGE_KIND=memory", "loses them"):
        assert part in text, part


@pytest.mark.parametrize(("environ", "kind"), [
    ({}, "filesystem"),  # the embedded default
    ({"REDIS": REDIS, "POSTGRES": "postgres://u@db/ydocs"}, "postgres"),  # as y-redis
    ({"REDIS": REDIS, "YSYNC_STORAGE_KIND": "memory"}, "memory"),  # by name
    ({"REDIS": REDIS, "YSYNC_STORAGE_KIND": "MEMORY"}, "memory"),
    ({"REDIS": REDIS, "YSYNC_STORAGE_KIND": "filesystem"}, "filesystem"),
    ({"REDIS": REDIS, "YSYNC_STORAGE_KIND": "gcs", "YSYNC_STORAGE_GCS_BUCKET": "b"}, "gcs"),
])
def test_a_storage_chosen_or_implied_is_accepted(environ: dict[str, str], kind: str) -> None:
    assert load_config(None, environ).storage_kind == kind


def test_the_config_file_can_choose_it(tmp_path: Path) -> None:
    path = tmp_path / "ysync.toml"
    path.write_text("[redis]\nurl = 'redis://h'\n[storage]\nkind = 'memory'\n")
    assert load_config(path, {}).storage_kind == "memory"
    path.write_text("[redis]\nurl = 'redis://h'\n[storage]\nkind = 'auto'\n")
    with pytest.raises(ConfigError, match="storage.kind"):
        load_config(path, {}).storage_kind  # noqa: B018


@pytest.mark.anyio
async def test_opening_storage_refuses_too() -> None:
    with pytest.raises(ConfigError, match="storage.kind"):
        async with open_storage(load_config(None, {"REDIS": REDIS})):
            pass


@pytest.mark.anyio
async def test_memory_storage_is_opened_with_a_loud_warning(
    caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(None, {"REDIS": REDIS, "YSYNC_STORAGE_KIND": "memory"})
    with caplog.at_level(logging.WARNING):
        async with open_storage(config) as storage:
            assert isinstance(storage, MemoryStorage)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ATTENTION" in w and "LOST" in w and "memory" in w for w in warnings), warnings


def test_ysync_serve_exits_2_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert ysync_main(["serve", "--redis", REDIS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ysync: ")
    assert "storage.kind" in err and "YSYNC_STORAGE_KIND" in err


def test_ysync_worker_exits_2_naming_the_setting(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS", REDIS)
    assert worker_main(["--once"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ysync-worker: ")
    assert "storage.kind" in err and "YSYNC_STORAGE_KIND" in err


def test_other_commands_need_no_storage(capsys: pytest.CaptureFixture[str]) -> None:
    assert ysync_main(["config", "--redis", REDIS]) == 0
    assert '"kind": "auto"' in capsys.readouterr().out
