"""The y-websocket protocol (docs/protocol.md), without I/O.

Decoding turns the bytes of one WebSocket frame into one typed message; encoding does the
reverse. :func:`merge_stream_messages` turns a batch of stream entries (``m`` fields) into at
most one update message and one awareness message. Malformed bytes raise
:class:`~ysync.errors.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import pycrdt

from ysync.errors import ProtocolError, UpdateFormatError
from ysync.updates import v1_to_v2
from ysync.updates.merge import merge_decoded
from ysync.updates.structs import gc_paused
from ysync.updates.v1 import decode_v1, encode_v1


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


_MAX_VARUINT_BYTES = 8  # lib0 numbers are at most 53 bits: 8 bytes of 7 bits are enough
_MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER


# --- lib0 primitives ---------------------------------------------------------------------------


def read_var_uint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a lib0 varuint at ``pos``; return (value, position after it)."""
    value = 0
    shift = 0
    end = len(data)
    for _ in range(_MAX_VARUINT_BYTES):
        if pos >= end:
            raise ProtocolError("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _MAX_SAFE_INTEGER:  # 8 bytes hold 56 bits
                raise ProtocolError("varuint longer than 53 bits")
            return value, pos
        shift += 7
    raise ProtocolError("varuint longer than 53 bits")


def read_var_bytes(data: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    """Decode a lib0 varUint8Array at ``pos``; return (bytes, position after it)."""
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(f"length {length} exceeds the {len(data) - pos} bytes left")
    return bytes(data[pos:end]), end


def write_var_uint(value: int) -> bytes:
    """Encode a non-negative integer as a lib0 varuint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(payload: bytes) -> bytes:
    return write_var_uint(len(payload)) + payload


# --- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """An awareness update; ``payload`` is its content (see :func:`decode_awareness`)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AuthDenied:
    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | AuthDenied | QueryAwareness


def decode_message(data: bytes) -> Message:
    """Decode one y-websocket message (one WebSocket frame). Trailing bytes are an error."""
    kind, pos = read_var_uint(data, 0)
    message: Message
    if kind == MessageType.SYNC:
        sync_kind, pos = read_var_uint(data, pos)
        payload, pos = read_var_bytes(data, pos)
        if sync_kind == SyncType.STEP1:
            message = SyncStep1(payload)
        elif sync_kind == SyncType.STEP2:
            message = SyncStep2(payload)
        elif sync_kind == SyncType.UPDATE:
            message = SyncUpdate(payload)
        else:
            raise ProtocolError(f"unknown sync message type {sync_kind}")
    elif kind == MessageType.AWARENESS:
        payload, pos = read_var_bytes(data, pos)
        message = AwarenessMessage(payload)
    elif kind == MessageType.AUTH:
        auth_kind, pos = read_var_uint(data, pos)
        if auth_kind != 0:
            raise ProtocolError(f"unknown auth message type {auth_kind}")
        raw, pos = read_var_bytes(data, pos)
        try:
            message = AuthDenied(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ProtocolError("auth reason is not UTF-8") from exc
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after a message of type {kind}")
    return message


def encode_sync_step1(state_vector: bytes) -> bytes:
    return b"\x00\x00" + write_var_bytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return b"\x00\x01" + write_var_bytes(update)


def encode_sync_update(update: bytes) -> bytes:
    return b"\x00\x02" + write_var_bytes(update)


def encode_awareness(payload: bytes) -> bytes:
    return b"\x01" + write_var_bytes(payload)


def encode_auth_denied(reason: str) -> bytes:
    return b"\x02\x00" + write_var_bytes(reason.encode("utf-8"))


def encode_query_awareness() -> bytes:
    return b"\x03"


# --- awareness ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's presence: ``state`` is the JSON text; ``"null"`` means the client left."""

    client_id: int
    clock: int
    state: str


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update (varuint n, then n x (client id, clock, varString JSON))."""
    count, pos = read_var_uint(payload, 0)
    # every entry takes at least 3 bytes: refuse counts the input cannot hold
    if count > (len(payload) - pos) // 3:
        raise ProtocolError(f"awareness update claims {count} entries in {len(payload)} bytes")
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(payload, pos)
        clock, pos = read_var_uint(payload, pos)
        raw, pos = read_var_bytes(payload, pos)
        try:
            state = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("awareness state is not UTF-8") from exc
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(payload):
        raise ProtocolError("trailing bytes after an awareness update")
    return entries


def encode_awareness_entries(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode entries as an awareness update payload (not yet wrapped as a message)."""
    items = list(entries)
    out = bytearray(write_var_uint(len(items)))
    for entry in items:
        out += write_var_uint(entry.client_id)
        out += write_var_uint(entry.clock)
        out += write_var_bytes(entry.state.encode("utf-8"))
    return bytes(out)


def awareness_disconnect_message(client_id: int, clock: int) -> bytes:
    """The message a server appends when a connection whose awareness was (id, clock) closes."""
    entry = AwarenessEntry(client_id, clock + 1, "null")
    return encode_awareness(encode_awareness_entries([entry]))


# --- batches from the stream -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergedBatch:
    """What one batch of stream messages becomes: at most one message of each kind.

    ``skipped`` counts entries that were not valid messages of a kind a stream may hold.
    """

    update: bytes | None
    awareness: bytes | None
    skipped: int


def merge_awareness(states: dict[int, AwarenessEntry], entries: Iterable[AwarenessEntry]) -> None:
    """Fold ``entries`` into ``states``: per client the newest clock wins (a tie keeps a leave)."""
    for entry in entries:
        known = states.get(entry.client_id)
        if known is None or entry.clock > known.clock or (
            entry.clock == known.clock and entry.state == "null"
        ):
            states[entry.client_id] = entry


def split_stream_messages(
    messages: Sequence[bytes],
) -> tuple[list[bytes], dict[int, AwarenessEntry], int]:
    """The updates of stream entries, their awareness folded per client (newest clock wins),
    and how many entries were neither a valid update nor a valid awareness message."""
    updates: list[bytes] = []
    states: dict[int, AwarenessEntry] = {}
    skipped = 0
    for raw in messages:
        try:
            message = decode_message(raw)
            if isinstance(message, SyncUpdate):
                updates.append(message.update)
            elif isinstance(message, AwarenessMessage):
                merge_awareness(states, decode_awareness(message.payload))
            else:
                skipped += 1
        except ProtocolError:
            skipped += 1
    return updates, states, skipped


def merge_stream_messages(messages: Sequence[bytes]) -> MergedBatch:
    """Merge stream entries into one sync-update message and one awareness message.

    A single valid message is passed through as it is (its framing is checked; its update is
    neither decoded nor re-encoded). Updates are merged with Yjs's update merge; awareness
    entries keep the newest clock per client. Entries that are not update or awareness messages,
    or whose update cannot be decoded, are skipped and counted.
    """
    if len(messages) == 1:
        only = messages[0]
        try:
            message = decode_message(only)
        except ProtocolError:
            return MergedBatch(None, None, 1)
        if isinstance(message, SyncUpdate):
            return MergedBatch(only, None, 0)
        if isinstance(message, AwarenessMessage):
            return MergedBatch(None, only, 0)
    updates, states, skipped = split_stream_messages(messages)
    update_message = None
    if len(updates) == 1:
        update_message = encode_sync_update(updates[0])
    elif updates:
        merged, invalid = _merge_valid_updates(updates)
        skipped += invalid
        if merged is not None:
            update_message = encode_sync_update(merged)
    awareness_message = None
    if states:
        awareness_message = encode_awareness(encode_awareness_entries(states.values()))
    return MergedBatch(update_message, awareness_message, skipped)


def _merge_valid_updates(updates: Sequence[bytes]) -> tuple[bytes | None, int]:
    """Merge the updates that decode; return (merged or None, number that did not decode).

    The merge is ysync's codec (``Y.mergeUpdates``, byte for byte): the content of every
    struct stays what its writer sent.
    """
    with gc_paused():
        kept: list[bytes] = []
        decoded = []
        for update in updates:
            try:
                decoded.append(decode_v1(update))
            except UpdateFormatError:
                continue
            kept.append(update)
        invalid = len(updates) - len(kept)
        if len(kept) <= 1:
            return (kept[0] if kept else None), invalid
        return encode_v1(merge_decoded(decoded)), invalid


def is_valid_update(update: bytes) -> bool:
    """True if ``update`` decodes as a Yjs v1 update.

    pycrdt (Rust) answers first and fast; what it refuses is asked of ysync's own codec, which
    also reads the few constructs Yjs writes and pycrdt cannot (lone surrogates in format JSON).
    """
    try:
        pycrdt.get_state(update)
    except (ValueError, RuntimeError):
        try:
            v1_to_v2(update)
        except UpdateFormatError:
            return False
    return True
