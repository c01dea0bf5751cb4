"""Opening the storage backend a configuration names (``storage.kind``, ``auto`` resolved)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ysync.config import MEMORY_STORAGE_WARNING, Config
from ysync.errors import ConfigError
from ysync.storage.base import Storage
from ysync.storage.filesystem import FilesystemStorage
from ysync.storage.memory import MemoryStorage

log = logging.getLogger(__name__)


async def _open(config: Config) -> Storage:
    kind = config.storage_kind
    timeout = config.storage.timeout
    if kind == "memory":
        log.warning(MEMORY_STORAGE_WARNING)
        return MemoryStorage()
    if kind == "filesystem":
        path = config.storage_path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"setting storage.path: {str(path)!r} exists and is not a folder")
        return FilesystemStorage(path, timeout=timeout)
    if kind == "gcs":
        if not config.storage.gcs_bucket:
            raise ConfigError("setting storage.gcs_bucket (YSYNC_STORAGE_GCS_BUCKET): required "
                              "when storage.kind is gcs")
        try:
            from ysync.storage.gcs import GcsStorage
        except ImportError as exc:
            raise ConfigError("storage.kind gcs needs google-cloud-storage: "
                              "pip install 'ysync[gcs]'") from exc
        return await GcsStorage.open(config.storage.gcs_bucket, config.storage.gcs_prefix,
                                     call_timeout=timeout)
    if kind == "postgres":
        url = config.storage.postgres
        if not url.startswith(("postgres://", "postgresql://")):
            raise ConfigError("setting storage.postgres (POSTGRES): a postgres:// URL is "
                              "required when storage.kind is postgres")
        try:
            from ysync.storage.postgres import PostgresStorage
        except ImportError as exc:
            raise ConfigError("storage.kind postgres needs psycopg: "
                              "pip install 'ysync[postgres]'") from exc
        return await PostgresStorage.open(url, call_timeout=timeout)
    if kind == "s3":
        s3 = config.storage  # the settings were checked by load_config
        if not s3.s3_endpoint:
            raise ConfigError("setting storage.s3_endpoint (S3_ENDPOINT): required when "
                              "storage.kind is s3")
        try:
            from ysync.storage.s3 import S3Storage
        except ImportError as exc:
            raise ConfigError("storage.kind s3 needs boto3: pip install 'ysync[s3]'") from exc
        return await S3Storage.open(s3.s3_endpoint_url, s3.s3_bucket,
                                    access_key=s3.s3_access_key, secret_key=s3.s3_secret_key,
                                    region=s3.s3_region, call_timeout=timeout)
    raise ConfigError(f"setting storage.kind: unknown storage {kind!r} "
                      f"(memory, filesystem, gcs, postgres or s3)")


@asynccontextmanager
async def open_storage(config: Config) -> AsyncIterator[Storage]:
    """The configured backend, connected; closed on exit.

    Raises ``ConfigError`` for settings that cannot work (no storage chosen with an external
    Redis among them, see :attr:`Config.storage_kind`) and ``StorageError`` when the backend
    cannot be reached (a missing GCS bucket, a refused Postgres connection, S3 refusing the
    keys). Memory storage is opened with a loud warning: its documents are lost when the
    process exits.
    """
    storage = await _open(config)
    try:
        yield storage
    finally:
        await storage.aclose()
