"""Who may call the document API (ysync/api/access.py), with the gate of an open server and a
gate that answers as a token server would."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers

from ysync.api.access import Access, ApiError, credential
from ysync.auth import Grant, PermissionUnavailable, RoomNameError
from ysync.errors import AuthError
from ysync.gate import Gate, OpenGate

pytestmark = pytest.mark.anyio


class ScriptedGate(Gate):
    """Answers by token: ``rw``, ``r``, or raises what its name says."""

    async def admit(self, path: str, query: str, headers: Headers) -> Grant:
        token = query.removeprefix("yauth=")
        if token == "unavailable":
            raise PermissionUnavailable("permission check timed out")
        if token == "denied":
            raise AuthError("permission check answered HTTP 403")
        if token == "badroom":
            raise RoomNameError("invalid room name")
        if token not in ("rw", "r"):
            raise AuthError("invalid token")
        return Grant(room=path[1:], user_id=f"user-{token}", can_write=token == "rw",
                     subprotocol=None, exp_ms=None)


def test_credentials_come_from_the_header_or_the_query() -> None:
    assert credential("Bearer abc", "") == "abc"
    assert credential("bearer  abc ", "yauth=other") == "abc"
    assert credential(None, "x=1&yauth=tok%2Ben") == "tok+en"
    assert credential("Basic abc", "") is None
    assert credential(None, "yauth=") is None


async def test_open_without_a_secret() -> None:
    access = Access(OpenGate(), "")
    assert access.open
    assert (await access.check("room", None, write=True)).can_write


async def test_open_with_a_secret_requires_it() -> None:
    access = Access(OpenGate(), "s3cret")
    assert not access.open
    for token in (None, "wrong", "s3cre", "s3cret!"):
        with pytest.raises(ApiError) as refused:
            await access.check("room", token, write=False)
        assert refused.value.status == 401
    assert (await access.check("room", "s3cret", write=True)).by_secret


async def test_tokens_are_checked_by_the_gate() -> None:
    access = Access(ScriptedGate(), "backend")
    assert (await access.check("room", "rw", write=True)).user_id == "user-rw"
    assert not (await access.check("room", "r", write=False)).can_write
    assert (await access.check("room", "backend", write=True)).by_secret
    cases = {None: 401, "forged": 401, "denied": 403, "unavailable": 503, "badroom": 400}
    for token, status in cases.items():
        with pytest.raises(ApiError) as refused:
            await access.check("room", token, write=False)
        assert refused.value.status == status, token
    with pytest.raises(ApiError) as refused:
        await access.check("room", "r", write=True)
    assert refused.value.status == 403 and "may only read" in refused.value.message
