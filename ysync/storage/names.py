"""Names of stored snapshots that every backend can hold, whatever the room.

Backends name a snapshot like y-redis's S3 objects: ``<encodeURIComponent(room)>/
<encodeURIComponent(docid)>/<uuid>``. Encoding can triple a room's length (``%`` becomes
``%25``), so a room accepted at the upgrade (up to 256 bytes as it arrives) can make a part of
that name longer than a backend allows: 255 bytes for a file name on common file systems, 1024
bytes for a whole GCS or S3 object name (:func:`object_folder`). Such a part is shortened by
:func:`fit_part`: its first bytes, then ``%~``, then the SHA-256 of the whole part. Names that
fit keep y-redis's form exactly; a shortened name cannot be mistaken for one that fits (an
encodeURIComponent output never holds a ``%`` that is not followed by two hex digits), and
different rooms keep different names (the hash covers the whole encoded part).

Shortened names are ysync's own: y-redis (whose S3 objects have the same limit) cannot open
such a room at all, and does not find these snapshots.
"""

from __future__ import annotations

import hashlib

from ysync.streams import encode_uri_component

__all__ = ["MAX_OBJECT_NAME_BYTES", "MAX_PART_BYTES", "SHORTENED_MARK", "SNAPSHOT_NAME_BYTES",
           "fit_part", "object_folder"]

#: Longest file name (NAME_MAX) of ext4, XFS, Btrfs, tmpfs, APFS, NTFS (in UTF-16 units).
MAX_PART_BYTES = 255
#: Separates a shortened part's head from its hash.
SHORTENED_MARK = "%~"
#: GCS's and S3's limit on the length of an object name, in UTF-8 bytes.
MAX_OBJECT_NAME_BYTES = 1024
#: The length of a snapshot's own name (a UUID) in an object name.
SNAPSHOT_NAME_BYTES = 36
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


def object_folder(prefix: str, room: str, docid: str) -> str:
    """``<prefix><encodeURIComponent(room)>/<encodeURIComponent(docid)>/``: the start of the
    object names of (room, docid)'s snapshots, with both parts shortened (:func:`fit_part`) only
    when a snapshot's name would be longer than :data:`MAX_OBJECT_NAME_BYTES`."""
    room_part, doc_part = encode_uri_component(room), encode_uri_component(docid)
    folder = f"{prefix}{room_part}/{doc_part}/"
    if len(folder.encode("utf-8")) + SNAPSHOT_NAME_BYTES <= MAX_OBJECT_NAME_BYTES:
        return folder
    return f"{prefix}{fit_part(room_part)}/{fit_part(doc_part)}/"
