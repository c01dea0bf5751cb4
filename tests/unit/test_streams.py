"""ysync.streams: stream keys as y-redis writes them, stream ids (pure; Node is the reference).

The JavaScript side is computed by one ``node -e`` call for the whole corpus; Node needs no
npm package for ``encodeURIComponent`` and ``decodeURIComponent``.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ysync.errors import BusError
from ysync.gate import room_from_path
from ysync.streams import (
    INDEX_DOC,
    ZERO_ID,
    StreamId,
    decode_uri_component,
    encode_uri_component,
    parse_room_stream_key,
    room_stream_key,
    worker_stream_key,
)

ENCODE_CORPUS = [
    *(chr(c) for c in range(0x80)),  # every ASCII character on its own
    "".join(chr(c) for c in range(0x20, 0x7F)),  # printable ASCII in one string
    "",
    " ",
    "a b",
    "compat late é",
    "compat%20late%20%C3%A9",
    "é",
    "ü",
    "\u00a0",
    "\u00ff",
    "\u0100",
    "\u07ff",
    "\u0800",
    "\u2028",
    "\ud7ff",
    "\ue000",
    "\ufeff",
    "\uffff",
    "日本語",
    "😀",
    "𝄞 music",
    "\U0010ffff",
    "%",
    "%%",
    "%25",
    "100%",
    ":",
    "/",
    "?",
    "#",
    "a:room:b:c",
    ";,/?:@&=+$",
    "-_.!~*'()",
    "[]{}<>|\\^`\"",
    "room/../../etc",
    "tab\there\nnewline\r\x00",
]

DECODE_CORPUS = [
    "",
    "plain",
    "a%20b",
    "%C3%A9",
    "%c3%a9",
    "%F0%9F%98%80",
    "%25",
    "%2525",
    "%3A%2F%3F%23",
    "+",
    "%2B",
    "é",
    "%",
    "%%",
    "%2",
    "%zz",
    "%G0",
    "a%",
    "%C3",
    "%C3%28",
    "%E2%82",
    "%ED%A0%80",  # an encoded surrogate
    "%C0%AF",  # overlong "/"
    "%F4%90%80%80",  # beyond U+10FFFF
    "%FF",
    "%00",
]

_NODE_SCRIPT = """
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const { encode, decode } = JSON.parse(input);
  const tryDecode = (s) => { try { return decodeURIComponent(s); } catch (e) { return null; } };
  process.stdout.write(JSON.stringify({
    encode: encode.map(encodeURIComponent),
    decode: decode.map(tryDecode),
  }));
});
"""


@pytest.fixture(scope="module")
def javascript() -> dict[str, list[str | None]]:
    """``encodeURIComponent`` of ENCODE_CORPUS and ``decodeURIComponent`` of DECODE_CORPUS."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run(
        [node, "-e", _NODE_SCRIPT],
        input=json.dumps({"encode": ENCODE_CORPUS, "decode": DECODE_CORPUS}),
        capture_output=True, text=True, encoding="utf-8", timeout=30, check=True,
    )
    answer: dict[str, list[str | None]] = json.loads(result.stdout)
    assert len(answer["encode"]) == len(ENCODE_CORPUS)
    assert len(answer["decode"]) == len(DECODE_CORPUS)
    return answer


def test_encode_uri_component_equals_javascript(javascript: dict[str, list[str | None]]) -> None:
    ours = [encode_uri_component(s) for s in ENCODE_CORPUS]
    mismatches = [(s, o, j) for s, o, j in zip(ENCODE_CORPUS, ours, javascript["encode"],
                                               strict=True) if o != j]
    assert mismatches == []


def test_decode_uri_component_equals_javascript(javascript: dict[str, list[str | None]]) -> None:
    def ours(value: str) -> str | None:
        try:
            return decode_uri_component(value)
        except ValueError:
            return None

    mismatches = [(s, ours(s), j) for s, j in zip(DECODE_CORPUS, javascript["decode"],
                                                  strict=True) if ours(s) != j]
    assert mismatches == []


def test_lone_surrogate_cannot_be_encoded() -> None:
    # JavaScript throws URIError; Python refuses too
    with pytest.raises(UnicodeEncodeError):
        encode_uri_component("\ud800")


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_uri_component_round_trip(value: str) -> None:
    encoded = encode_uri_component(value)
    assert all(c.isascii() and (c.isalnum() or c in "-_.!~*'()%") for c in encoded)
    assert decode_uri_component(encoded) == value


# --- stream keys -------------------------------------------------------------------------------


def test_room_from_the_url_path_is_encoded_a_second_time() -> None:
    room = room_from_path("/compat%20late%20%C3%A9")
    assert room == "compat%20late%20%C3%A9"
    key = room_stream_key("y", room)
    assert key == "y:room:compat%2520late%2520%25C3%25A9:index"
    assert parse_room_stream_key("y", key) == ("compat%20late%20%C3%A9", "index")


@pytest.mark.parametrize(
    ("prefix", "room", "docid", "key"),
    [
        ("y", "my-room", INDEX_DOC, "y:room:my-room:index"),
        ("y", "a:b", "c:d", "y:room:a%3Ab:c%3Ad"),
        ("yr", "a/b?c#d", "index", "yr:room:a%2Fb%3Fc%23d:index"),
        ("y", "", "", "y:room::"),
        ("app:y", "r", "sub doc", "app:y:room:r:sub%20doc"),
        ("y", "😀", "é", "y:room:%F0%9F%98%80:%C3%A9"),
    ],
)
def test_room_stream_key(prefix: str, room: str, docid: str, key: str) -> None:
    assert room_stream_key(prefix, room, docid) == key
    assert parse_room_stream_key(prefix, key) == (room, docid)


def test_worker_stream_key() -> None:
    assert worker_stream_key("y") == "y:worker"


@given(
    st.text().filter(lambda p: ":room:" not in p),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.text(alphabet=st.characters(codec="utf-8")),
)
def test_stream_key_round_trip(prefix: str, room: str, docid: str) -> None:
    assert parse_room_stream_key(prefix, room_stream_key(prefix, room, docid)) == (room, docid)


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        ("y", ""),
        ("y", "y:worker"),
        ("y", "y:room:onlyroom"),
        ("y", "x:room:a:index"),  # another prefix
        ("y", "yy:room:a:index"),
        ("y", "y:room:a:room:b:index"),  # the greedy prefix is "y:room:a"
        ("y", "y:room:%zz:index"),  # not an escape
        ("y", "y:room:a:%"),
        ("y", "y:room:%C3:index"),  # not UTF-8
        ("y", "y:room:%ED%A0%80:index"),  # a surrogate
    ],
)
def test_malformed_stream_key_is_a_bus_error(prefix: str, key: str) -> None:
    with pytest.raises(BusError):
        parse_room_stream_key(prefix, key)


# --- stream ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0-0", StreamId(0, 0)),
        ("1700000000000-5", StreamId(1_700_000_000_000, 5)),
        (b"1700000000000-12", StreamId(1_700_000_000_000, 12)),
        ("42", StreamId(42, 0)),
        ("18446744073709551615-18446744073709551615", StreamId(2**64 - 1, 2**64 - 1)),
    ],
)
def test_stream_id_parse(raw: str | bytes, expected: StreamId) -> None:
    assert StreamId.parse(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "-", "abc", "1-x", "-1", "1-", "1--2", "1-2-3", " 1-2", "1-2 ", "+1-0", "1_000-0",
     "0x10-0", "1.5-0", "١-٠", b"\xff-1"],
)
def test_malformed_stream_id_is_a_bus_error(raw: str | bytes) -> None:
    with pytest.raises(BusError):
        StreamId.parse(raw)


def test_stream_id_text_round_trip() -> None:
    for text in ("0-0", "1-1", "1700000000000-99"):
        assert str(StreamId.parse(text)) == text
    assert str(StreamId(7)) == "7-0"


def test_stream_ids_order_as_redis_orders_them() -> None:
    ids = [StreamId.parse(t) for t in ("10-0", "2-10", "2-2", "0-1", "0-0", "100-0", "2-9")]
    assert [str(i) for i in sorted(ids)] == ["0-0", "0-1", "2-2", "2-9", "2-10", "10-0", "100-0"]
    assert StreamId(1, 10) > StreamId(1, 9)  # numerically, not as text
    assert StreamId(2, 0) > StreamId(1, 999)
    assert ZERO_ID == StreamId(0, 0)
    assert min(ids) == ZERO_ID
    assert max(ids) == StreamId(100, 0)


@given(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
       st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
def test_stream_id_order_is_the_order_of_its_parts(a: tuple[int, int],
                                                   b: tuple[int, int]) -> None:
    assert (StreamId(*a) < StreamId(*b)) == (a < b)
    assert StreamId.parse(str(StreamId(*a))) == StreamId(*a)
