"""Snapshot storage: the contract (:mod:`ysync.storage.base`) and its backends."""

from ysync.storage.base import Storage, StoredDoc
from ysync.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "Storage", "StoredDoc"]
