"""ysync.control: which connections a kick revokes, and the records and messages (pure)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ysync.control import (
    Revocation,
    _apply,
    parse_record,
    record_member,
    revoked_connections,
    revokes,
)

KICK_AT = 1_700_000_000_000


@dataclass
class Conn:
    room: str
    user_id: str
    opened_ms: int


def test_a_kick_ends_connections_opened_before_it() -> None:
    record = Revocation("doc", "mallory", KICK_AT)
    assert revokes(record, Conn("doc", "mallory", KICK_AT - 60_000))
    assert revokes(record, Conn("doc", "mallory", KICK_AT)), "opened in the kick's millisecond"
    assert not revokes(record, Conn("doc", "mallory", KICK_AT + 1)), "opened after the kick"


def test_a_kick_names_a_user_or_everyone() -> None:
    alice = Conn("doc", "alice", KICK_AT - 1)
    assert not revokes(Revocation("doc", "mallory", KICK_AT), alice)
    assert revokes(Revocation("doc", None, KICK_AT), alice)
    assert not revokes(Revocation("other", None, KICK_AT), alice)


@pytest.mark.parametrize(("connection_room", "named"), [
    ("my%20room", "my%20room"),  # as in the URL
    ("my%20room", "my room"),  # as the client named it
    ("100%25", "100%"),
])
def test_the_room_may_be_named_either_way(connection_room: str, named: str) -> None:
    conn = Conn(connection_room, "u", KICK_AT - 1)
    assert revokes(Revocation(named, None, KICK_AT), conn)
    assert revoked_connections([Revocation(named, None, KICK_AT)], [conn]) == [conn]


def test_revoked_connections_each_once_in_order() -> None:
    conns = [Conn("a", "m", 1), Conn("b", "m", 1), Conn("a", "alice", 1), Conn("a", "m", 5),
             Conn("a%20b", "m", 1)]
    records = [Revocation("a", "m", 3), Revocation("a", None, 2), Revocation("a b", "m", 9),
               Revocation("zzz", None, 9)]
    assert revoked_connections(records, conns) == [conns[0], conns[2], conns[4]]
    assert revoked_connections([], conns) == []
    assert revoked_connections(records, []) == []


def test_many_records_and_connections_stay_linear() -> None:
    records = [Revocation(f"room{i}", None, 10) for i in range(20_000)]
    conns = [Conn(f"room{i}", "u", 5 if i % 2 else 15) for i in range(20_000)]
    revoked = revoked_connections(records, conns)
    assert len(revoked) == 10_000 and all(c.opened_ms == 5 for c in revoked)


@pytest.mark.parametrize(("room", "user"), [("doc", "u1"), ("doc", None), ("é \"x\"", "ü"),
                                            ("a", "")])
def test_record_round_trip(room: str, user: str | None) -> None:
    member = record_member(room, user)
    assert parse_record(member.encode(), float(KICK_AT)) == Revocation(room, user, KICK_AT)
    assert record_member(room, user) == member, "one member per room and user"
    assert record_member(room, user) != record_member(room, "other")


@pytest.mark.parametrize("member", [b"", b"{", b'{"a": 1, "b": 2}', b'["doc"]',
                                    b'["doc", "u", 1]', b"[1, null]", b'["doc", 5]', b"\xff"])
def test_malformed_records_are_ignored(member: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_record(member, 1.0) is None
    assert "malformed revocation record" in caplog.text


class Recorder:
    def __init__(self) -> None:
        self.kicks: list[tuple[str, str | None, int | None]] = []

    def kick(self, room: str, user_id: str | None, at_ms: int | None) -> int:
        self.kicks.append((room, user_id, at_ms))
        return 1

    def apply_revocations(self, records: Sequence[Revocation]) -> int:
        raise AssertionError("not called for a message")


@pytest.mark.parametrize(("message", "expected"), [
    ({"op": "kick", "room": "r", "user": "u", "at": KICK_AT}, ("r", "u", KICK_AT)),
    ({"op": "kick", "room": "r", "user": None}, ("r", None, None)),  # an older ysync kick
])
def test_control_messages_are_applied(message: object, expected: tuple[object, ...]) -> None:
    kicker = Recorder()
    _apply(json.dumps(message).encode(), kicker)
    assert kicker.kicks == [expected]


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'"kick"', b'{"op": "other", "room": "r"}',
                                 b'{"op": "kick", "room": 5}',
                                 b'{"op": "kick", "room": "r", "user": 5}',
                                 b'{"op": "kick", "room": "r", "at": "soon"}'])
def test_malformed_messages_are_ignored(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    kicker = Recorder()
    with caplog.at_level(logging.WARNING):
        _apply(raw, kicker)
    assert kicker.kicks == [] and "malformed control message" in caplog.text
