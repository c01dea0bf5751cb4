"""ysync.auth against the real lib0 crypto/jwt and crypto/ecdsa that y-redis uses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ysync.auth import (
    current_time_ms,
    generate_keypair,
    load_private_key,
    load_public_key,
    mint_token,
    permission_url,
    verify_token,
)
from ysync.errors import AuthError

from conftest import seconds

pytestmark = pytest.mark.node


def lib0(node_dir: Path, command: str, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(node_dir / "auth_lib0.mjs"), command],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=node_dir,
        timeout=seconds(30),
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture(scope="module")
def lib0_keypair(node_dir: Path) -> tuple[str, str]:
    """A key pair printed by lib0's own ``0ecdsa-generate-keypair --name auth``."""
    script = node_dir / "node_modules" / "lib0" / "bin" / "0ecdsa-generate-keypair.js"
    done = subprocess.run(
        ["node", str(script), "--name", "auth"],
        capture_output=True,
        text=True,
        cwd=node_dir,
        timeout=seconds(30),
        check=True,
    )
    lines = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("AUTH_")
    )
    return lines["AUTH_PUBLIC_KEY"], lines["AUTH_PRIVATE_KEY"]


def test_generated_keys_have_lib0_shape(lib0_keypair: tuple[str, str]) -> None:
    ours = [json.loads(value) for value in generate_keypair()]
    theirs = [json.loads(value) for value in lib0_keypair]
    for mine, lib0s in zip(ours, theirs, strict=True):
        assert list(mine) == list(lib0s)
        assert {k: v for k, v in mine.items() if k not in "xyd"} == {
            k: v for k, v in lib0s.items() if k not in "xyd"
        }
        assert all(len(mine[k]) == len(lib0s[k]) for k in "xyd" if k in mine)
    public, private = generate_keypair()
    assert public == json.dumps(json.loads(public), separators=(",", ":"))
    assert private == json.dumps(json.loads(private), separators=(",", ":"))


def test_lib0_imports_our_keys(node_dir: Path) -> None:
    public, private = generate_keypair()
    imported_public = lib0(node_dir, "import", {"jwk": public})
    assert imported_public["type"] == "public"
    assert imported_public["usages"] == ["verify"]
    assert imported_public["algorithm"] == {"name": "ECDSA", "namedCurve": "P-384"}
    imported_private = lib0(node_dir, "import", {"jwk": private})
    assert imported_private["type"] == "private"
    assert imported_private["usages"] == ["sign"]


def test_we_load_lib0_keys(lib0_keypair: tuple[str, str]) -> None:
    public, private = lib0_keypair
    public_key = load_public_key(public)
    private_key = load_private_key(private)
    assert public_key.to_jwk_json() == public
    assert private_key.to_jwk_json() == private
    token = mint_token(private_key, "alice", 60)
    assert verify_token(token, public_key, current_time_ms()).user_id == "alice"


def test_lib0_accepts_our_token(node_dir: Path) -> None:
    public, private = generate_keypair()
    token = mint_token(load_private_key(private), "alice é", 3600, issuer="ysync-test")
    answer = lib0(node_dir, "verify", {"publicJwk": public, "token": token})
    assert answer["ok"], answer
    assert answer["header"] == {"alg": "ES384", "typ": "JWT"}
    payload = answer["payload"]
    assert payload["yuserid"] == "alice é"
    assert payload["iss"] == "ysync-test"
    assert payload["exp"] - payload["iat"] == 3_600_000
    # lib0 compares exp with Date.now(): milliseconds
    assert abs(payload["iat"] - current_time_ms()) < seconds(60) * 1000


def test_lib0_accepts_our_token_signed_with_its_key(
    node_dir: Path, lib0_keypair: tuple[str, str]
) -> None:
    public, private = lib0_keypair
    token = mint_token(load_private_key(private), "bob", 60)
    answer = lib0(node_dir, "verify", {"publicJwk": public, "token": token})
    assert answer["ok"], answer
    assert answer["payload"]["yuserid"] == "bob"


def test_lib0_refuses_our_expired_token(node_dir: Path) -> None:
    public, private = generate_keypair()
    long_ago = current_time_ms() - 3_600_000
    token = mint_token(load_private_key(private), "alice", 60, now_ms=long_ago)
    answer = lib0(node_dir, "verify", {"publicJwk": public, "token": token})
    assert answer == {"ok": False, "error": "Expired JWT"}


def test_lib0_refuses_our_token_with_another_key(node_dir: Path) -> None:
    public, _ = generate_keypair()
    _, other_private = generate_keypair()
    token = mint_token(load_private_key(other_private), "mallory", 60)
    answer = lib0(node_dir, "verify", {"publicJwk": public, "token": token})
    assert answer == {"ok": False, "error": "Invalid JWT"}


def test_we_accept_lib0_token(node_dir: Path, lib0_keypair: tuple[str, str]) -> None:
    public, private = lib0_keypair
    now = current_time_ms()
    # the payload of y-redis's bin/auth-server-example.js
    payload = {"iss": "Auth-Server-Example", "exp": now + 3_600_000, "yuserid": "user1"}
    token = lib0(node_dir, "mint", {"privateJwk": private, "payload": payload})["token"]
    assert token.split(".")[0] == mint_token(load_private_key(private), "x", 1).split(".")[0]
    claims = verify_token(token, load_public_key(public), now)
    assert claims.user_id == "user1"
    assert claims.exp_ms == now + 3_600_000
    assert claims.claims["iss"] == "Auth-Server-Example"


def test_we_accept_lib0_token_for_our_keys(node_dir: Path) -> None:
    public, private = generate_keypair()
    now = current_time_ms()
    payload = {"exp": now + 1000, "yuserid": "carol"}
    token = lib0(node_dir, "mint", {"privateJwk": private, "payload": payload})["token"]
    assert verify_token(token, load_public_key(public), now + 1000).user_id == "carol"
    with pytest.raises(AuthError, match="token expired"):
        verify_token(token, load_public_key(public), now + 1001)


def test_we_refuse_lib0_token_without_yuserid(
    node_dir: Path, lib0_keypair: tuple[str, str]
) -> None:
    public, private = lib0_keypair
    payload = {"exp": current_time_ms() + 60_000, "user": "dave"}
    token = lib0(node_dir, "mint", {"privateJwk": private, "payload": payload})["token"]
    with pytest.raises(AuthError, match="yuserid"):
        verify_token(token, load_public_key(public), current_time_ms())


def test_permission_url_matches_y_redis(node_dir: Path) -> None:
    rooms = ["index", "compat%20late%20%C3%A9", "é", "100%", "a|b^c[d]e{f}g`h", 'a"b<c>d',
             "a!b$c&d'e(f)*+,:@~", "a;b=c", "%41", "a b", "\u00a0\u2028x", "日本"]
    users = ["user1", "a b", "é", "%41", "x@example.com", "a|b{c}", "😀"]
    cases = [[room, user] for room in rooms for user in users]
    for callback in ("http://127.0.0.1:5173/auth/perm", "http://h/auth/perm/"):
        expected = lib0(node_dir, "permurl", {"callback": callback, "cases": cases})["urls"]
        assert [permission_url(callback, room, user) for room, user in cases] == expected
