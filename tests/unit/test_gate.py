"""ysync.gate: the room of a request path, as y-redis takes it (pure)."""

from __future__ import annotations

import pytest

from ysync.errors import AuthError
from ysync.gate import MAX_ROOM_LENGTH, room_as_sent, room_from_path


@pytest.mark.parametrize(
    "room",
    [
        "my-room",
        "a",
        "Room_1.2~x",
        "compat%20late%20%C3%A9",  # stays percent-encoded: y-redis does not decode it
        "%25",
        "a%2Eb",
        "...",
        ".hidden",
        "a..b",
        "é",  # a raw non-ASCII character is kept as it arrived
        "!$&'()*+,;=:@",
        "x" * MAX_ROOM_LENGTH,
    ],
)
def test_room_is_the_raw_path_segment(room: str) -> None:
    assert room_from_path("/" + room) == room


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "room",  # no leading slash
        "//",
        "/a/b",
        "/room/",
        "/.",
        "/..",
        "/%2e",
        "/%2E%2e",
        "/.%2E",
        "/%2e.",
        "/a%2Fb",
        "/a%2fb",
        "/..%2f..%2fetc",
        "/a%5Cb",
        "/a%5cb",
        "/a%00b",
        "/a%0Ab",
        "/a%7fb",
        "/a\\b",
        "/a?b",
        "/a#b",
        "/a\tb",
        "/a\nb",
        "/a\rb",
        "/a\x00b",
        "/a\x7fb",
        "/" + "x" * (MAX_ROOM_LENGTH + 1),
        "/" + "é" * (MAX_ROOM_LENGTH // 2 + 1),  # the limit is in UTF-8 bytes
    ],
)
def test_bad_room_is_refused(path: str) -> None:
    with pytest.raises(AuthError):
        room_from_path(path)


@pytest.mark.parametrize(("name", "segment"), [
    ("plain", "plain"),
    ("compat late é", "compat%20late%20%C3%A9"),
    ("compat%20late%20%C3%A9", "compat%20late%20%C3%A9"),
    ('a"b<c>d`e{f}g', "a%22b%3Cc%3Ed%60e%7Bf%7Dg"),
    ("emoji 😀", "emoji%20%F0%9F%98%80"),
    ("keep-_.!~*'()&=+$,;:@", "keep-_.!~*'()&=+$,;:@"),
])
def test_room_as_sent_matches_the_url_parser(name: str, segment: str) -> None:
    assert room_as_sent(name) == segment
