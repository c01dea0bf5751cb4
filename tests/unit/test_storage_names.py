"""Name parts that every backend can hold: y-redis's where they fit, shortened with a hash."""

from __future__ import annotations

import hashlib
import re

import pytest

from ysync.auth import validate_room_segment
from ysync.storage.names import MAX_PART_BYTES, SHORTENED_MARK, fit_part
from ysync.streams import encode_uri_component

#: The longest rooms the upgrade accepts: 256 plain bytes, 85 escapes of "%" (255 bytes) that
#: become 425 bytes once encoded again, 256 bytes that encodeURIComponent triples.
LONGEST_ROOMS = ["a" * 256, "%25" * 85, "%C3%A9" * 42 + "%2", "x" * 255 + "%", ":" * 256]


def test_the_longest_rooms_are_accepted_at_the_upgrade() -> None:
    for room in LONGEST_ROOMS:
        assert validate_room_segment(room) == room


def test_parts_that_fit_are_unchanged() -> None:
    for part in ("index", "my%20room", "a" * MAX_PART_BYTES, "%2525" * 51):
        assert fit_part(part) == part


def test_long_parts_are_shortened_to_a_head_and_the_hash_of_the_whole() -> None:
    for room in LONGEST_ROOMS:
        encoded = encode_uri_component(room)
        assert len(encoded) > MAX_PART_BYTES
        short = fit_part(encoded)
        assert len(short.encode()) <= MAX_PART_BYTES
        head, mark, digest = short.rpartition(SHORTENED_MARK)
        assert mark and digest == hashlib.sha256(encoded.encode()).hexdigest()
        assert encoded.startswith(head) and len(head) >= 180
        assert not re.search(r"%.?$", head)  # no escape cut in two


def test_shortened_names_stay_distinct_and_never_equal_a_name_that_fits() -> None:
    base = "%25" * 84
    names = {fit_part(encode_uri_component(base + tail)) for tail in ("ab", "ac", "a%", "%a")}
    assert len(names) == 4
    for name in names:
        # encodeURIComponent writes "%" only before two hex digits: "%~" cannot be its output
        assert SHORTENED_MARK in name and fit_part(name) == name


def test_non_ascii_parts_are_cut_between_characters() -> None:
    short = fit_part("é" * 200)
    assert len(short.encode()) <= MAX_PART_BYTES
    assert short.startswith("é" * 94)


def test_a_limit_too_small_for_the_hash_is_refused() -> None:
    with pytest.raises(ValueError):
        fit_part("x" * 100, limit=50)
