"""A client closed with 1011 is told what failed: Redis, storage, or the document itself."""

from __future__ import annotations

from ysync.errors import BusError, StorageError, UpdateFormatError
from ysync.server import _unavailable


def test_the_reason_names_what_failed() -> None:
    assert _unavailable(BusError("reading y:room:r:index failed")) == "redis unavailable"
    assert _unavailable(StorageError("gcs storage: reading failed")) == "storage unavailable"
    assert _unavailable(UpdateFormatError("bad snapshot")) == "document unavailable"
