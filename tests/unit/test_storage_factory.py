"""Choosing and opening the storage backend from the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ysync.config import StorageConfig, load_config
from ysync.errors import ConfigError, StorageError
from ysync.storage.factory import open_storage
from ysync.storage.filesystem import FilesystemStorage
from ysync.storage.gcs import GcsStorage
from ysync.storage.memory import MemoryStorage
from ysync.storage.postgres import PostgresStorage

from storage_fixtures import GcsEmulator, make_config
from storage_fixtures import gcs_emulator as gcs_emulator  # noqa: F401 - fixture
from storage_fixtures import postgres_url as postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


async def test_memory_and_filesystem(tmp_path: Path) -> None:
    async with open_storage(make_config(storage=StorageConfig(kind="memory"))) as storage:
        assert isinstance(storage, MemoryStorage)
    config = make_config(storage=StorageConfig(kind="filesystem", path=str(tmp_path / "s")))
    async with open_storage(config) as storage:
        assert isinstance(storage, FilesystemStorage)
        assert storage.root == tmp_path / "s"


async def test_environment_selects_the_backend(
    tmp_path: Path, gcs_emulator: GcsEmulator, postgres_url: str
) -> None:
    bucket = gcs_emulator.new_bucket()
    empty = tmp_path / "config.toml"
    empty.write_text("")
    config = load_config(empty, environ={"REDIS": "redis://localhost:6379",
                                         "POSTGRES": postgres_url})
    assert config.storage_kind == "postgres"  # as y-redis: POSTGRES selects Postgres
    async with open_storage(config) as storage:
        assert isinstance(storage, PostgresStorage)
    config = load_config(empty, environ={"REDIS": "redis://localhost:6379",
                                         "YSYNC_STORAGE_KIND": "gcs",
                                         "YSYNC_STORAGE_GCS_BUCKET": bucket,
                                         "YSYNC_STORAGE_GCS_PREFIX": "docs"})
    async with open_storage(config) as storage:
        assert isinstance(storage, GcsStorage)
        assert storage.prefix == "docs/"
    config = load_config(empty, environ={"YSYNC_DATA_DIR": str(tmp_path)})
    async with open_storage(config) as storage:  # embedded: filesystem under the data dir
        assert isinstance(storage, FilesystemStorage)
        assert storage.root == tmp_path / "storage"


async def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gcs_bucket"):
        async with open_storage(make_config(storage=StorageConfig(kind="gcs"))):
            pass
    with pytest.raises(ConfigError, match="POSTGRES"):
        async with open_storage(make_config(storage=StorageConfig(kind="postgres"))):
            pass
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="storage.path"):
        async with open_storage(make_config(
                storage=StorageConfig(kind="filesystem", path=str(blocker)))):
            pass


async def test_unreachable_backends_are_storage_errors() -> None:
    config = make_config(storage=StorageConfig(
        kind="postgres", postgres="postgresql://127.0.0.1:1/x", timeout=5))
    with pytest.raises(StorageError):
        async with open_storage(config):
            pass
