"""Snapshot storage: the contract (:mod:`ysync.storage.base`) and its backends.

:func:`open_storage` opens the backend a configuration names. The GCS, PostgreSQL and S3
backends (:mod:`ysync.storage.gcs`, :mod:`ysync.storage.postgres`, :mod:`ysync.storage.s3`) are
imported only when used, since their client libraries are optional dependencies.
"""

from ysync.storage.base import Storage, StoredDoc
from ysync.storage.factory import open_storage
from ysync.storage.filesystem import FilesystemStorage
from ysync.storage.memory import MemoryStorage

__all__ = ["FilesystemStorage", "MemoryStorage", "Storage", "StoredDoc", "open_storage"]
