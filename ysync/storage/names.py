"""Names of stored snapshots that every backend can hold, whatever the room.

Backends name a snapshot like y-redis's S3 objects: ``<encodeURIComponent(room)>/
<encodeURIComponent(docid)>/<uuid>``. Encoding can triple a room's length (``%`` becomes
``%25``), so a room accepted at the upgrade (up to 256 bytes as it arrives) can make a part of
that name longer than a backend allows: 255 bytes for a file name on common file systems, 1024
bytes for a whole GCS object name. Such a part is shortened by :func:`fit_part`: its first
bytes, then ``%~``, then the SHA-256 of the whole part. Names that fit keep y-redis's form
exactly; a shortened name cannot be mistaken for one that fits (an encodeURIComponent output
never holds a ``%`` that is not followed by two hex digits), and different rooms keep different
names (the hash covers the whole encoded part).

Shortened names are ysync's own: y-redis (whose S3 objects have the same limit) cannot open
such a room at all, and does not find these snapshots.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_PART_BYTES", "SHORTENED_MARK", "fit_part"]

#: Longest file name (NAME_MAX) of ext4, XFS, Btrfs, tmpfs, APFS, NTFS (in UTF-16 units).
MAX_PART_BYTES = 255
#: Separates a shortened part's head from its hash.
SHORTENED_MARK = "%~"
_DIGEST_CHARS = 64  # SHA-256 in hex


def fit_part(encoded: str, limit: int = MAX_PART_BYTES) -> str:
    """``encoded`` (one URI-encoded name part) if it fits ``limit`` UTF-8 bytes, else its
    shortened form: ``<head>%~<sha256 hex of encoded>``, at most ``limit`` bytes."""
    raw = encoded.encode("utf-8")
    if len(raw) <= limit:
        return encoded
    head_bytes = limit - len(SHORTENED_MARK) - _DIGEST_CHARS
    if head_bytes < 0:
        raise ValueError(f"a name part limit of {limit} bytes cannot hold a hash")
    head = raw[:head_bytes].decode("utf-8", errors="ignore")  # no half UTF-8 sequence
    escape = head.rfind("%", len(head) - 2)
    if escape != -1:
        head = head[:escape]  # no half %XX escape either: the head stays readable
    return f"{head}{SHORTENED_MARK}{hashlib.sha256(raw).hexdigest()}"
