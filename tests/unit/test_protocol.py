"""ysync.protocol: the y-websocket codec, awareness and the stream batch merge (pure)."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ysync.errors import ProtocolError
from ysync.protocol import (
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_disconnect_message,
    decode_awareness,
    decode_message,
    encode_auth_denied,
    encode_awareness,
    encode_awareness_entries,
    encode_query_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    merge_awareness,
    merge_stream_messages,
    read_var_bytes,
    read_var_uint,
    write_var_bytes,
    write_var_uint,
)

MAX_SAFE_INTEGER = 2**53 - 1

# docs/protocol.md: stream entries written by y-redis 0.1.6 with y-websocket clients
UPDATE_CLIENT_1 = bytes.fromhex("000217010101002801036d6170036b657901770576616c756500")
UPDATE_CLIENT_2 = bytes.fromhex("00021201010200040104746578740568656c6c6f00")
AWARENESS_ALICE = bytes.fromhex(
    "011d010101197b2275736572223a7b226e616d65223a22616c696365227d7d"
)
AWARENESS_INITIAL = bytes.fromhex("0106010100027b7d")
EMPTY_STEP2_AS_UPDATE = bytes.fromhex("0002020000")
CLIENT_3_LEAVES = bytes.fromhex("0108010300046e756c6c")
CLIENT_3_DISCONNECTED = bytes.fromhex("0108010301046e756c6c")


def encode(message: Message) -> bytes:
    """The encoder of each message type."""
    match message:
        case SyncStep1(state_vector):
            return encode_sync_step1(state_vector)
        case SyncStep2(update):
            return encode_sync_step2(update)
        case SyncUpdate(update):
            return encode_sync_update(update)
        case AwarenessMessage(payload):
            return encode_awareness(payload)
        case AuthDenied(reason):
            return encode_auth_denied(reason)
        case QueryAwareness():
            return encode_query_awareness()
    raise AssertionError(message)


def awareness_message(*entries: tuple[int, int, str]) -> bytes:
    return encode_awareness(encode_awareness_entries(AwarenessEntry(*e) for e in entries))


def awareness_of(message: bytes | None) -> dict[int, AwarenessEntry]:
    assert message is not None
    decoded = decode_message(message)
    assert isinstance(decoded, AwarenessMessage)
    return {e.client_id: e for e in decode_awareness(decoded.payload)}


def update_of(message: bytes | None) -> bytes:
    assert message is not None
    decoded = decode_message(message)
    assert isinstance(decoded, SyncUpdate)
    return decoded.update


def doc_from(*updates: bytes, client_id: int | None = None) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    for update in updates:
        doc.apply_update(update)
    return doc


def doc_content(doc: pycrdt.Doc[Any]) -> tuple[dict[str, object], str, bytes]:
    return (
        doc.get("map", type=pycrdt.Map).to_py() or {},
        str(doc.get("text", type=pycrdt.Text)),
        doc.get_state(),
    )


# --- lib0 primitives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2**32 - 1, "ffffffff0f"),
        (MAX_SAFE_INTEGER, "ffffffffffffff0f"),
    ],
)
def test_var_uint_matches_lib0(value: int, encoded: str) -> None:
    assert write_var_uint(value).hex() == encoded
    assert read_var_uint(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)


def test_var_uint_reads_at_position() -> None:
    data = b"\xff" + write_var_uint(300) + b"\xee"
    assert read_var_uint(data, 1) == (300, 3)
    assert read_var_uint(memoryview(data), 1) == (300, 3)


def test_var_bytes_round_trip() -> None:
    data = write_var_bytes(b"abc") + b"rest"
    assert read_var_bytes(data, 0) == (b"abc", 4)
    assert read_var_bytes(write_var_bytes(b""), 0) == (b"", 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\xff\xff\xff",
        write_var_uint(2**53),  # 54 bits in 8 bytes
        write_var_uint(2**56 - 1),  # all of 8 bytes
        b"\xff" * 8 + b"\x01",  # a ninth byte
        b"\x80" * 20 + b"\x00",
    ],
)
def test_bad_var_uint_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_var_uint(data, 0)


def test_var_bytes_longer_than_input_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        read_var_bytes(b"\x05abc", 0)


# --- messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "encoded"),
    [
        (SyncStep1(b"\x01\x02"), "0000020102"),
        (SyncStep1(b""), "000000"),
        (SyncStep2(b"\x00\x00"), "0001020000"),
        (SyncUpdate(b"\x00\x00"), "0002020000"),
        (AwarenessMessage(b"\x00"), "010100"),
        (AuthDenied("no"), "0200026e6f"),
        (AuthDenied(""), "020000"),
        (QueryAwareness(), "03"),
    ],
)
def test_every_message_type_round_trips(message: Message, encoded: str) -> None:
    assert encode(message).hex() == encoded
    assert decode_message(bytes.fromhex(encoded)) == message


def test_long_payload_has_multi_byte_length() -> None:
    update = bytes(range(256)) * 3
    encoded = encode_sync_update(update)
    assert encoded[:4] == b"\x00\x02\x80\x06"
    assert decode_message(encoded) == SyncUpdate(update)


def test_auth_reason_is_utf8() -> None:
    assert decode_message(encode_auth_denied("accès refusé 🔒")) == AuthDenied("accès refusé 🔒")


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "empty frame"),
        (b"\x80", "truncated message type"),
        (b"\x00", "sync without subtype"),
        (b"\x00\x02", "update without length"),
        (b"\x00\x02\x85", "truncated length varuint"),
        (b"\x00\x02\x05abc", "length beyond input"),
        (b"\x01\x05ab", "awareness length beyond input"),
        (b"\x00\x02\x01a\x00", "trailing byte after an update"),
        (b"\x03\x00", "trailing byte after query awareness"),
        (encode_sync_update(b"ab") + encode_sync_update(b"cd"), "two messages in one frame"),
        (b"\x07", "unknown message type 7"),
        (b"\x04\x00", "unknown message type 4"),
        (b"\x00\x03\x00", "unknown sync subtype 3"),
        (b"\x02\x01\x00", "unknown auth subtype"),
        (b"\x02\x00\x02\xc3\x28", "auth reason not UTF-8"),
        (write_var_uint(2**53), "message type beyond 53 bits"),
        (b"\x00" + write_var_uint(2**53 + 2) + b"\x00", "sync subtype beyond 53 bits"),
        (b"\x00\x02" + write_var_uint(2**53 + 5), "length beyond 53 bits"),
    ],
)
def test_malformed_message_is_a_protocol_error(data: bytes, what: str) -> None:
    with pytest.raises(ProtocolError):
        decode_message(data)


# --- the observed bytes of y-redis 0.1.6 (docs/protocol.md) ----------------------------------


def test_update_of_client_1_sets_map_key() -> None:
    message = decode_message(UPDATE_CLIENT_1)
    assert isinstance(message, SyncUpdate)
    doc = doc_from(message.update)
    assert doc.get("map", type=pycrdt.Map).to_py() == {"key": "value"}
    assert encode_sync_update(message.update) == UPDATE_CLIENT_1


def test_update_of_client_2_inserts_hello() -> None:
    message = decode_message(UPDATE_CLIENT_2)
    assert isinstance(message, SyncUpdate)
    doc = doc_from(message.update)
    assert str(doc.get("text", type=pycrdt.Text)) == "hello"
    assert encode_sync_update(message.update) == UPDATE_CLIENT_2


def test_pycrdt_writes_the_same_update_bytes_as_yjs() -> None:
    doc = doc_from(client_id=1)
    doc.get("map", type=pycrdt.Map)["key"] = "value"
    assert encode_sync_update(doc.get_update()) == UPDATE_CLIENT_1


def test_awareness_of_alice() -> None:
    message = decode_message(AWARENESS_ALICE)
    assert isinstance(message, AwarenessMessage)
    entries = decode_awareness(message.payload)
    assert entries == [AwarenessEntry(1, 1, '{"user":{"name":"alice"}}')]
    assert encode_awareness(encode_awareness_entries(entries)) == AWARENESS_ALICE


def test_initial_awareness() -> None:
    message = decode_message(AWARENESS_INITIAL)
    assert isinstance(message, AwarenessMessage)
    assert decode_awareness(message.payload) == [AwarenessEntry(1, 0, "{}")]


def test_empty_step2_stored_as_update() -> None:
    assert decode_message(EMPTY_STEP2_AS_UPDATE) == SyncUpdate(b"\x00\x00")


def test_client_removing_itself() -> None:
    message = decode_message(CLIENT_3_LEAVES)
    assert isinstance(message, AwarenessMessage)
    assert decode_awareness(message.payload) == [AwarenessEntry(3, 0, "null")]


def test_disconnect_message_is_clock_plus_one_and_null() -> None:
    assert awareness_disconnect_message(3, 0) == CLIENT_3_DISCONNECTED
    entries = awareness_of(awareness_disconnect_message(2**32, 41))
    assert entries == {2**32: AwarenessEntry(2**32, 42, "null")}


# --- awareness ---------------------------------------------------------------------------------


def test_awareness_with_several_entries_round_trips() -> None:
    entries = [
        AwarenessEntry(1, 1, '{"a":1}'),
        AwarenessEntry(300, 2**31, "null"),
        AwarenessEntry(MAX_SAFE_INTEGER, 0, '{"name":"é😀"}'),
    ]
    assert decode_awareness(encode_awareness_entries(entries)) == entries
    assert decode_awareness(encode_awareness_entries([])) == []


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (b"", "no count"),
        (b"\x05\x01\x01\x00", "count larger than the entries"),
        (write_var_uint(2**40) + b"\x01\x01\x00", "huge count"),
        (b"\x02\x01\x01\x00\x02\x01", "second entry truncated"),
        (b"\x01\x01\x01\x05ab", "state length beyond input"),
        (b"\x01\x01\x01\x00\x00", "trailing bytes"),
        (b"\x01\x01\x01\x02\xc3\x28", "state not UTF-8"),
        (b"\x01" + write_var_uint(2**53) + b"\x01\x00", "client id beyond 53 bits"),
    ],
)
def test_malformed_awareness_is_a_protocol_error(payload: bytes, what: str) -> None:
    with pytest.raises(ProtocolError):
        decode_awareness(payload)


def test_merge_awareness_newest_clock_wins() -> None:
    states: dict[int, AwarenessEntry] = {}
    merge_awareness(states, [AwarenessEntry(1, 2, '"b"'), AwarenessEntry(2, 7, '"x"')])
    merge_awareness(states, [AwarenessEntry(1, 1, '"a"'), AwarenessEntry(1, 3, '"c"')])
    merge_awareness(states, [AwarenessEntry(2, 7, '"y"')])  # same clock, not a leave: kept first
    assert states == {1: AwarenessEntry(1, 3, '"c"'), 2: AwarenessEntry(2, 7, '"x"')}


@pytest.mark.parametrize("leave_first", [False, True])
def test_merge_awareness_leave_wins_a_tie(leave_first: bool) -> None:
    entries = [AwarenessEntry(5, 4, '{"user":1}'), AwarenessEntry(5, 4, "null")]
    if leave_first:
        entries.reverse()
    states: dict[int, AwarenessEntry] = {}
    merge_awareness(states, entries)
    assert states == {5: AwarenessEntry(5, 4, "null")}


# --- merge_stream_messages ---------------------------------------------------------------------


def test_empty_batch() -> None:
    batch = merge_stream_messages([])
    assert (batch.update, batch.awareness, batch.skipped) == (None, None, 0)


def test_single_update_is_passed_through() -> None:
    message = bytes(UPDATE_CLIENT_1)
    batch = merge_stream_messages([message])
    assert batch.update is message
    assert (batch.awareness, batch.skipped) == (None, 0)


def test_single_awareness_is_passed_through() -> None:
    message = bytes(AWARENESS_ALICE)
    batch = merge_stream_messages([message])
    assert batch.awareness is message
    assert (batch.update, batch.skipped) == (None, 0)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00\x02\x05ab",  # update framing broken
        b"\x01\x09{}",  # awareness framing broken
        encode_sync_step1(b"\x00"),  # a type a stream never holds
        encode_query_awareness(),
    ],
)
def test_single_malformed_entry_is_skipped(message: bytes) -> None:
    batch = merge_stream_messages([message])
    assert (batch.update, batch.awareness, batch.skipped) == (None, None, 1)


def incremental_updates() -> list[bytes]:
    """Updates from two clients, some depending on earlier ones."""
    updates: list[bytes] = []
    first = doc_from(client_id=11)
    second = doc_from(client_id=22)
    text = first.get("text", type=pycrdt.Text)
    amap = second.get("map", type=pycrdt.Map)
    for doc in (first, second):
        doc.observe(lambda event: updates.append(event.update))
    text += "hello"
    amap["a"] = 1
    text.insert(5, " world")
    amap["b"] = [1, 2]
    del text[0:1]
    amap["a"] = "replaced"
    return updates


def test_several_updates_merge_into_one_equivalent_update() -> None:
    updates = incremental_updates()
    batch = merge_stream_messages([encode_sync_update(u) for u in updates])
    assert batch.skipped == 0
    assert batch.awareness is None
    merged = doc_from(update_of(batch.update))
    one_by_one = doc_from(*updates)
    assert doc_content(merged) == doc_content(one_by_one)
    assert doc_content(merged)[:2] == ({"a": "replaced", "b": [1.0, 2.0]}, "ello world")


def test_section_8_updates_merge() -> None:
    batch = merge_stream_messages([UPDATE_CLIENT_1, UPDATE_CLIENT_2, EMPTY_STEP2_AS_UPDATE])
    doc = doc_from(update_of(batch.update))
    assert doc_content(doc)[:2] == ({"key": "value"}, "hello")
    assert batch.skipped == 0


def test_awareness_batch_newest_clock_wins_and_leave_wins_a_tie() -> None:
    batch = merge_stream_messages([
        awareness_message((1, 1, '{"v":1}'), (2, 5, '{"v":"two"}')),
        awareness_message((1, 3, '{"v":3}')),
        awareness_message((1, 2, '{"v":2}')),
        awareness_message((2, 5, "null")),
        awareness_message((2, 5, '{"v":"back"}')),
        awareness_message((3, 0, "{}")),
    ])
    assert batch.update is None
    assert batch.skipped == 0
    assert awareness_of(batch.awareness) == {
        1: AwarenessEntry(1, 3, '{"v":3}'),
        2: AwarenessEntry(2, 5, "null"),
        3: AwarenessEntry(3, 0, "{}"),
    }


def test_awareness_batch_adds_no_phantom_client() -> None:
    # y-redis adds a `{}` entry of its own; ysync must not (docs/protocol.md)
    batch = merge_stream_messages([AWARENESS_ALICE, AWARENESS_INITIAL])
    assert awareness_of(batch.awareness) == {1: AwarenessEntry(1, 1, '{"user":{"name":"alice"}}')}


def test_mixed_batch_gives_one_update_and_one_awareness() -> None:
    batch = merge_stream_messages([UPDATE_CLIENT_1, AWARENESS_ALICE, UPDATE_CLIENT_2,
                                   CLIENT_3_DISCONNECTED])
    assert batch.skipped == 0
    doc = doc_from(update_of(batch.update))
    assert doc_content(doc)[:2] == ({"key": "value"}, "hello")
    assert set(awareness_of(batch.awareness)) == {1, 3}


def test_mixed_batch_with_one_update_keeps_its_bytes() -> None:
    batch = merge_stream_messages([AWARENESS_ALICE, UPDATE_CLIENT_2])
    assert batch.update == UPDATE_CLIENT_2
    assert batch.awareness is not None


def test_malformed_entries_are_skipped_and_counted() -> None:
    batch = merge_stream_messages([
        b"",
        UPDATE_CLIENT_1,
        b"\x07",  # unknown type
        b"\x00\x02\x05ab",  # length beyond input
        encode_sync_step1(b"\x00"),  # not a stream message
        encode_sync_step2(b"\x00\x00"),  # stored as an update, never as a step 2
        encode_awareness(b"\x05\x01"),  # awareness that does not decode
        AWARENESS_ALICE,
        UPDATE_CLIENT_1 + b"\x00",  # trailing byte
    ])
    assert batch.skipped == 7
    assert batch.update == UPDATE_CLIENT_1
    assert batch.awareness == AWARENESS_ALICE


def test_undecodable_update_does_not_poison_the_valid_ones() -> None:
    garbage = encode_sync_update(b"\xff\xff\xff\xff")
    batch = merge_stream_messages([UPDATE_CLIENT_1, garbage, UPDATE_CLIENT_2])
    assert batch.skipped == 1
    doc = doc_from(update_of(batch.update))
    assert doc_content(doc)[:2] == ({"key": "value"}, "hello")


def test_undecodable_update_next_to_one_valid_update() -> None:
    garbage = encode_sync_update(b"\x01")
    batch = merge_stream_messages([garbage, UPDATE_CLIENT_2])
    assert (batch.update, batch.skipped) == (UPDATE_CLIENT_2, 1)


def test_only_undecodable_updates_give_no_update() -> None:
    batch = merge_stream_messages([encode_sync_update(b"\x01"), encode_sync_update(b"\xff"),
                                   AWARENESS_ALICE])
    assert (batch.update, batch.awareness, batch.skipped) == (None, AWARENESS_ALICE, 2)


# --- properties --------------------------------------------------------------------------------

utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=50)

messages = st.one_of(
    st.builds(SyncStep1, st.binary(max_size=300)),
    st.builds(SyncStep2, st.binary(max_size=300)),
    st.builds(SyncUpdate, st.binary(max_size=300)),
    st.builds(AwarenessMessage, st.binary(max_size=300)),
    st.builds(AuthDenied, utf8_text),
    st.just(QueryAwareness()),
)

awareness_entries = st.lists(
    st.builds(
        AwarenessEntry,
        st.integers(0, MAX_SAFE_INTEGER),
        st.integers(0, MAX_SAFE_INTEGER),
        utf8_text,
    ),
    max_size=8,
)


@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes_returns_a_message_or_raises_protocol_error(data: bytes) -> None:
    try:
        message = decode_message(data)
    except ProtocolError:
        return
    # not always the same bytes: lib0 also reads non-minimal varuints such as 80 00
    assert decode_message(encode(message)) == message


@given(st.binary(max_size=64))
def test_decode_awareness_of_arbitrary_bytes_only_raises_protocol_error(data: bytes) -> None:
    try:
        entries = decode_awareness(data)
    except ProtocolError:
        return
    assert decode_awareness(encode_awareness_entries(entries)) == entries


@given(st.lists(st.binary(max_size=24), max_size=6))
def test_merge_of_arbitrary_entries_never_raises(entries: list[bytes]) -> None:
    batch = merge_stream_messages(entries)
    assert 0 <= batch.skipped <= len(entries)
    for message in (batch.update, batch.awareness):
        if message is not None:
            decode_message(message)


@given(messages)
def test_message_round_trip(message: Message) -> None:
    assert decode_message(encode(message)) == message


@given(awareness_entries)
def test_awareness_round_trip(entries: list[AwarenessEntry]) -> None:
    assert decode_awareness(encode_awareness_entries(entries)) == entries


@given(st.integers(0, MAX_SAFE_INTEGER))
def test_var_uint_round_trip(value: int) -> None:
    encoded = write_var_uint(value)
    assert read_var_uint(encoded, 0) == (value, len(encoded))
