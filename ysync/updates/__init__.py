"""Yjs update codec: v1 <-> v2 conversion, merging, diffs and state vectors of updates.

y-redis stores documents as Yjs **v2** updates while pycrdt reads and writes only v1; these
functions translate between the two with the exact bytes Yjs (13.6) produces, so that a
document written by one side is read unchanged by the other. Every function raises
:class:`ysync.errors.UpdateFormatError` for bytes that are not a valid update in the expected
encoding, and refuses inputs that would make it allocate or work far beyond their size.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES

from ysync.updates import lib0 as _lib0
from ysync.updates.diff import diff_v1, diff_v2
from ysync.updates.lib0 import BytesLike
from ysync.updates.merge import merge_v2
from ysync.updates.state_vector import state_vector_from_v2
from ysync.updates.structs import gc_paused
from ysync.updates.v1 import decode_v1, encode_v1
from ysync.updates.v2 import decode_v2, encode_v2

__all__ = [
    "COMPILED",
    "diff_v1",
    "diff_v2",
    "merge_v2",
    "state_vector_from_v2",
    "v1_to_v2",
    "v2_to_v1",
]

#: Whether the codec runs compiled by mypyc (``pip install`` compiles it when it can: setup.py).
COMPILED: bool = _lib0.__file__.endswith(tuple(EXTENSION_SUFFIXES))


def v2_to_v1(update: BytesLike) -> bytes:
    """Convert a v2 update to v1, byte for byte as ``Y.convertUpdateFormatV2ToV1``.

    The result describes the same document, up to what v1 cannot hold: a lone UTF-16
    surrogate becomes U+FFFD and ``-0`` in an embed or formatting attribute becomes ``0``
    (JSON), as with Yjs. Raises :class:`~ysync.errors.UpdateFormatError` for bytes that are
    not a v2 update, and for the few updates Yjs reads but cannot write in v1 (a BigInt where
    JSON must go).
    """
    with gc_paused():
        return encode_v1(decode_v2(bytes(update)))


def v1_to_v2(update: BytesLike) -> bytes:
    """Convert a v1 update to v2, byte for byte as ``Y.convertUpdateFormatV1ToV2``.

    Raises :class:`~ysync.errors.UpdateFormatError` for bytes that are not a v1 update, and
    for a delete set Yjs would write as garbage in v2 (overlapping or empty ranges).
    """
    with gc_paused():
        return encode_v2(decode_v1(bytes(update)))
