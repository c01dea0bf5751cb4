"""ysync.auth: keys, tokens, token extraction and room segments (pure, no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ysync.auth import (
    DEFAULT_MAX_ROOM_LENGTH,
    DEFAULT_MAX_TOKEN_LENGTH,
    PrivateKey,
    PublicKey,
    RoomNameError,
    extract_token,
    generate_keypair,
    keypair_env_lines,
    load_private_key,
    load_public_key,
    mint_token,
    permission_url,
    validate_room_segment,
    verify_token,
)
from ysync.errors import AuthError, ConfigError

from jwt_forge import b64, b64json, es384, sign_ecdsa

NOW = 1_700_000_000_000  # ms


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return generate_keypair()


@pytest.fixture(scope="module")
def public_key(keypair: tuple[str, str]) -> PublicKey:
    return load_public_key(keypair[0])


@pytest.fixture(scope="module")
def private_key(keypair: tuple[str, str]) -> PrivateKey:
    return load_private_key(keypair[1])


def refused(token: str, public_key: PublicKey, now_ms: int = NOW, **kwargs: Any) -> str:
    with pytest.raises(AuthError) as info:
        verify_token(token, public_key, now_ms, **kwargs)
    reason = info.value.reason
    assert str(info.value) == reason
    if len(token) > 8:
        assert token not in reason
        for segment in token.split("."):
            assert len(segment) < 8 or segment not in reason
    return reason


# Keys


def test_generate_keypair_prints_lib0_shape(keypair: tuple[str, str]) -> None:
    public, private = (json.loads(value) for value in keypair)
    assert list(public) == ["key_ops", "ext", "kty", "x", "y", "crv"]
    assert list(private) == ["key_ops", "ext", "kty", "x", "y", "crv", "d"]
    assert public["key_ops"] == ["verify"] and private["key_ops"] == ["sign"]
    assert public["ext"] is True and private["ext"] is True
    assert public["kty"] == "EC" and public["crv"] == "P-384"
    assert (public["x"], public["y"]) == (private["x"], private["y"])
    assert all(len(private[name]) == 64 for name in "xyd")  # 48 bytes, base64url
    assert " " not in keypair[0] and " " not in keypair[1]


def test_keypair_env_lines(keypair: tuple[str, str]) -> None:
    text = keypair_env_lines(*keypair)
    assert text == f"AUTH_PUBLIC_KEY={keypair[0]}\nAUTH_PRIVATE_KEY={keypair[1]}"


def test_keys_round_trip(keypair: tuple[str, str], private_key: PrivateKey) -> None:
    assert load_public_key(keypair[0]).to_jwk_json() == keypair[0]
    assert private_key.to_jwk_json() == keypair[1]
    assert private_key.public_key.to_jwk_json() == keypair[0]
    assert "d" not in repr(private_key) and keypair[1] not in repr(private_key)


def test_keys_without_key_ops_load(keypair: tuple[str, str]) -> None:
    public = {k: v for k, v in json.loads(keypair[0]).items() if k not in ("key_ops", "ext")}
    private = {k: v for k, v in json.loads(keypair[1]).items() if k not in ("key_ops", "ext")}
    token = mint_token(load_private_key(json.dumps(private)), "alice", 1, now_ms=NOW)
    assert verify_token(token, load_public_key(json.dumps(public)), NOW).user_id == "alice"


def p256_jwk(private: bool) -> str:
    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    jwk = {"kty": "EC", "crv": "P-256",
           "x": b64(numbers.public_numbers.x.to_bytes(32, "big")),
           "y": b64(numbers.public_numbers.y.to_bytes(32, "big"))}
    if private:
        jwk["d"] = b64(numbers.private_value.to_bytes(32, "big"))
    return json.dumps(jwk)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "EC key"),
        ('{"kty": "oct", "k": "c2VjcmV0"}', "EC key"),
        (None, "P-384"),  # a P-256 key, filled in below
        ('{"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"}', "not a valid P-384 key"),
    ],
)
def test_load_public_key_refuses(value: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        load_public_key(p256_jwk(False) if value is None else value)
    assert "AUTH_PUBLIC_KEY" in str(info.value)


def test_load_public_key_refuses_a_private_key(keypair: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="AUTH_PUBLIC_KEY: holds a private key") as info:
        load_public_key(keypair[1])
    assert json.loads(keypair[1])["d"] not in str(info.value)


def test_load_public_key_refuses_wrong_usage(keypair: tuple[str, str]) -> None:
    jwk = json.loads(keypair[0])
    for bad in ({"key_ops": ["sign"]}, {"alg": "ES256"}, {"use": "enc"}):
        with pytest.raises(ConfigError, match="AUTH_PUBLIC_KEY"):
            load_public_key(json.dumps({**jwk, **bad}))


def test_load_private_key_refuses(keypair: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="AUTH_PRIVATE_KEY: not a private key"):
        load_private_key(keypair[0].replace('["verify"]', '["sign"]'))
    with pytest.raises(ConfigError, match="AUTH_PRIVATE_KEY: expected curve P-384"):
        load_private_key(p256_jwk(True))
    with pytest.raises(ConfigError, match="AUTH_PRIVATE_KEY: key_ops must include 'sign'"):
        load_private_key(keypair[1].replace('["sign"]', '["verify"]'))
    other_d = json.loads(generate_keypair()[1])["d"]
    mismatched = {**json.loads(keypair[1]), "d": other_d}
    with pytest.raises(ConfigError, match="AUTH_PRIVATE_KEY: not a valid P-384 key") as info:
        load_private_key(json.dumps(mismatched))
    assert other_d not in str(info.value)


def test_setting_name_is_configurable() -> None:
    with pytest.raises(ConfigError, match=r"auth\.public_key \(AUTH_PUBLIC_KEY\)"):
        load_public_key("nope", setting="auth.public_key (AUTH_PUBLIC_KEY)")


# Minting


def test_mint_token_is_lib0_jwt(private_key: PrivateKey, public_key: PublicKey) -> None:
    token = mint_token(private_key, "alice", 90.5, now_ms=NOW)
    header, payload, signature = token.split(".")
    assert header == b64(b'{"alg":"ES384","typ":"JWT"}')
    assert base64.urlsafe_b64decode(payload + "==") == (
        b'{"iat":1700000000000,"exp":1700000090500,"yuserid":"alice"}'
    )
    assert len(base64.urlsafe_b64decode(signature + "==")) == 96  # raw r||s
    claims = verify_token(token, public_key, NOW)
    assert claims.user_id == "alice"
    assert claims.exp_ms == NOW + 90_500
    assert dict(claims.claims) == {"iat": NOW, "exp": NOW + 90_500, "yuserid": "alice"}


def test_mint_token_issuer_and_unicode(private_key: PrivateKey, public_key: PublicKey) -> None:
    token = mint_token(private_key, "zoë", 1, now_ms=NOW, issuer="ysync")
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert payload == '{"iss":"ysync","iat":1700000000000,"exp":1700000001000,"yuserid":"zoë"}'\
        .encode()
    assert verify_token(token, public_key, NOW).user_id == "zoë"


def test_mint_token_defaults_to_now(private_key: PrivateKey, public_key: PublicKey) -> None:
    from ysync.auth import current_time_ms

    before = current_time_ms()
    claims = verify_token(mint_token(private_key, "a", 60), public_key, before)
    assert before <= claims.claims["iat"] <= current_time_ms()


@pytest.mark.parametrize(("user", "ttl"), [("", 1), ("a", 0), ("a", -1), ("a", float("inf"))])
def test_mint_token_refuses_bad_arguments(private_key: PrivateKey, user: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        mint_token(private_key, user, ttl)


# Verifying: every way a token is refused


def test_expiry_is_in_milliseconds(private_key: PrivateKey, public_key: PublicKey) -> None:
    token = mint_token(private_key, "alice", 1, now_ms=NOW)
    assert verify_token(token, public_key, NOW + 1000).user_id == "alice"  # at exp: still good
    assert refused(token, public_key, NOW + 1001) == "token expired"
    # a seconds-based reader would think this token good until the year 50000+
    assert refused(token, public_key, NOW + 10**9) == "token expired"


def test_no_exp_never_expires_as_in_lib0(private_key: PrivateKey, public_key: PublicKey) -> None:
    for payload in ({"yuserid": "a"}, {"yuserid": "a", "exp": None}):
        assert verify_token(es384(private_key, payload), public_key, NOW).exp_ms is None


@pytest.mark.parametrize("exp", ["1700000000001", True, [1], {"ms": 1}])
def test_bad_exp(private_key: PrivateKey, public_key: PublicKey, exp: object) -> None:
    token = es384(private_key, {"exp": exp, "yuserid": "a"})
    assert refused(token, public_key) == "invalid token expiry"


def test_non_finite_exp(private_key: PrivateKey, public_key: PublicKey) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        token = es384(private_key, b'{"exp":' + literal + b',"yuserid":"a"}')
        assert refused(token, public_key) == "malformed token payload"


@pytest.mark.parametrize(
    "payload",
    [{"exp": NOW + 1}, {"yuserid": None}, {"yuserid": 42}, {"yuserid": ""},
     {"yuserid": ["a"]}, {"userid": "a"}],
)
def test_missing_or_bad_yuserid(
    private_key: PrivateKey, public_key: PublicKey, payload: dict[str, Any]
) -> None:
    assert refused(es384(private_key, payload), public_key) == "token has no yuserid"


@pytest.mark.parametrize(
    "payload", [b"[]", b'"yuserid"', b"42", b"null", b"not json", b"\xff\xfe", b""]
)
def test_payload_not_a_json_object(
    private_key: PrivateKey, public_key: PublicKey, payload: bytes
) -> None:
    token = es384(private_key, payload)
    assert refused(token, public_key) in ("malformed token payload", "malformed token")


def test_tampered_payload(private_key: PrivateKey, public_key: PublicKey) -> None:
    header, _, signature = mint_token(private_key, "alice", 60, now_ms=NOW).split(".")
    forged = b64json({"iat": NOW, "exp": NOW + 60_000, "yuserid": "admin"})
    assert refused(f"{header}.{forged}.{signature}", public_key) == "invalid token signature"


def test_tampered_signature(private_key: PrivateKey, public_key: PublicKey) -> None:
    token = mint_token(private_key, "alice", 60, now_ms=NOW)
    signature = bytearray(base64.urlsafe_b64decode(token.split(".")[2] + "=="))
    signature[10] ^= 1
    tampered = token.rsplit(".", 1)[0] + "." + b64(bytes(signature))
    assert refused(tampered, public_key) == "invalid token signature"
    truncated = token.rsplit(".", 1)[0] + "." + b64(bytes(signature[:64]))
    assert refused(truncated, public_key) == "invalid token signature"


def test_signed_by_another_key(public_key: PublicKey) -> None:
    other = load_private_key(generate_keypair()[1])
    assert refused(mint_token(other, "alice", 60, now_ms=NOW), public_key) \
        == "invalid token signature"


def test_es256_token_refused(public_key: PublicKey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = json.dumps({"exp": NOW + 1, "yuserid": "a"}).encode()
    es256 = sign_ecdsa({"alg": "ES256", "typ": "JWT"}, payload, key, hashes.SHA256())
    assert refused(es256, public_key) == "unsupported token algorithm"
    # a P-256 signature that claims to be ES384
    disguised = sign_ecdsa({"alg": "ES384", "typ": "JWT"}, payload, key, hashes.SHA384())
    assert refused(disguised, public_key) == "invalid token signature"


def test_alg_none_refused(public_key: PublicKey) -> None:
    unsigned = b64json({"alg": "none", "typ": "JWT"}) + "." + b64json({"yuserid": "admin"})
    assert refused(unsigned + ".", public_key) == "malformed token"
    assert refused(unsigned + "." + b64(b"x" * 96), public_key) == "unsupported token algorithm"
    for alg in ("None", "NONE", ""):
        token = b64json({"alg": alg}) + "." + b64json({"yuserid": "admin"}) + ".AAAA"
        assert refused(token, public_key) == "unsupported token algorithm"


@pytest.mark.parametrize(("alg", "digest"), [("HS256", hashlib.sha256), ("HS384", hashlib.sha384)])
def test_hmac_with_the_public_key_as_secret_refused(
    keypair: tuple[str, str], public_key: PublicKey, alg: str, digest: Any
) -> None:
    signing_input = b64json({"alg": alg, "typ": "JWT"}) + "." + b64json({"yuserid": "admin"})
    for secret in (keypair[0].encode(), public_key.to_jwk_json().encode()):
        mac = hmac.new(secret, signing_input.encode(), digest).digest()
        assert refused(f"{signing_input}.{b64(mac)}", public_key) == "unsupported token algorithm"


def test_header_without_alg_or_with_crit(private_key: PrivateKey, public_key: PublicKey) -> None:
    assert refused(es384(private_key, {"yuserid": "a"}, {"typ": "JWT"}), public_key) \
        == "unsupported token algorithm"
    crit = {"alg": "ES384", "crit": ["exp"], "exp": 1}
    assert refused(es384(private_key, {"yuserid": "a"}, crit), public_key) \
        == "unsupported token header"
    b64_false = {"alg": "ES384", "b64": False, "crit": ["b64"]}
    assert refused(es384(private_key, {"yuserid": "a"}, b64_false), public_key) \
        == "unsupported token header"


def test_oversized_token(private_key: PrivateKey, public_key: PublicKey) -> None:
    payload = {"exp": NOW + 1, "yuserid": "a", "pad": "x" * DEFAULT_MAX_TOKEN_LENGTH}
    token = es384(private_key, payload)
    assert refused(token, public_key) == "token too long"
    assert refused(token, public_key, max_length=len(token) - 1) == "token too long"
    assert verify_token(token, public_key, NOW, max_length=len(token)).user_id == "a"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "a+b.c.d", "a/b.c.d", "a=.b.c",
     "ä.b.c", "a b.c.d", "eyJ.eyJ.AAAA", "A.eyJ.AAAA", "W10.e30.AAAA", "bnVsbA.e30.AAAA",
     "e30.e30.AAAA", "eyJhbGciOiJFUzM4NCJ9.e30.A"],
)
def test_garbage(public_key: PublicKey, token: str) -> None:
    reason = refused(token, public_key)
    assert reason in ("missing token", "malformed token", "malformed token header",
                      "unsupported token algorithm", "invalid token signature", "invalid token")


def test_reasons_never_hold_the_token(private_key: PrivateKey, public_key: PublicKey) -> None:
    token = mint_token(private_key, "alice", 1, now_ms=NOW)
    with pytest.raises(AuthError) as info:
        verify_token(token, public_key, NOW + 5000)
    assert token not in repr(info.value) and token not in str(info.value)


# Extracting the token from an upgrade request


@pytest.mark.parametrize(
    ("subprotocols", "query", "expected"),
    [
        (["yauth-abc.def.ghi"], "", ("abc.def.ghi", "yauth-abc.def.ghi")),
        (["other", "yauth-tok"], "yauth=fromquery", ("tok", "yauth-tok")),
        (["yauth-first", "yauth-second"], "", ("first", "yauth-first")),
        ([], "yauth=fromquery", ("fromquery", None)),
        ([], "?yauth=fromquery", ("fromquery", None)),
        ([], "a=1&yauth=q%2Eq&yauth=second", ("q.q", None)),
        (["other"], "a=1", (None, None)),
        (["yauth-"], "", (None, None)),
        (["yauth-"], "yauth=q", ("q", None)),
        (["yauth"], "", (None, None)),
        (["xyauth-tok"], "", (None, None)),
        ([], "yauth=", (None, None)),
        ([], "", (None, None)),
    ],
)
def test_extract_token(
    subprotocols: list[str], query: str, expected: tuple[str | None, str | None]
) -> None:
    assert extract_token(subprotocols, query) == expected


# Room path segments


@pytest.mark.parametrize(
    "segment",
    ["index", "compat%20late%20%C3%A9", "a.b", "...", "%2e%2e%2e", "100%", "a|b^c[d]",
     "a;b=c", "a!b$c&d'e(f)*+,:@~", "%41", "é", "x" * DEFAULT_MAX_ROOM_LENGTH],
)
def test_room_segments_kept_as_they_arrived(segment: str) -> None:
    assert validate_room_segment(segment) == segment


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("", "empty room name"),
        (".", "invalid room name"),
        ("..", "invalid room name"),
        ("%2e", "invalid room name"),
        ("%2E%2e", "invalid room name"),
        (".%2E", "invalid room name"),
        ("%2e.", "invalid room name"),
        ("a/b", "invalid character in room name"),
        ("..%2f..", "invalid character in room name"),
        ("a%2Fb", "invalid character in room name"),
        ("a\\b", "invalid character in room name"),
        ("a%5cb", "invalid character in room name"),
        ("a?b", "invalid character in room name"),
        ("a#b", "invalid character in room name"),
        ("a\x00b", "invalid character in room name"),
        ("a%00b", "invalid character in room name"),
        ("a\nb", "invalid character in room name"),
        ("a%0Ab", "invalid character in room name"),
        ("a%1fb", "invalid character in room name"),
        ("a\x7fb", "invalid character in room name"),
        ("a%7Fb", "invalid character in room name"),
        ("a\x85b", "invalid character in room name"),
        ("\ud800", "invalid room name"),
        ("x" * (DEFAULT_MAX_ROOM_LENGTH + 1), "room name too long"),
        ("é" * (DEFAULT_MAX_ROOM_LENGTH // 2 + 1), "room name too long"),
    ],
)
def test_room_segments_refused(segment: str, reason: str) -> None:
    with pytest.raises(RoomNameError) as info:
        validate_room_segment(segment)
    assert info.value.reason == reason
    assert isinstance(info.value, AuthError)


def test_room_length_is_configurable() -> None:
    assert validate_room_segment("x" * 1000, max_length=1000) == "x" * 1000
    with pytest.raises(RoomNameError, match="too long"):
        validate_room_segment("abc", max_length=2)


# The permission URL (built as y-redis's `new URL(`${room}/${yuserid}`, callback + '/')`)


@pytest.mark.parametrize(
    ("room", "user", "expected"),
    [
        ("index", "u1", "http://h:1/auth/perm/index/u1"),
        ("compat%20late%20%C3%A9", "a b", "http://h:1/auth/perm/compat%20late%20%C3%A9/a%20b"),
        ("é", "é", "http://h:1/auth/perm/%C3%A9/%C3%A9"),
        ("100%", "%41", "http://h:1/auth/perm/100%/%41"),
        ("a|b^c[d]e{f}g`h", "u1", "http://h:1/auth/perm/a|b^c[d]e%7Bf%7Dg%60h/u1"),
        ('a"b<c>d', "u1", "http://h:1/auth/perm/a%22b%3Cc%3Ed/u1"),
        ("a!b$c&d'e(f)*+,:@~", "u1", "http://h:1/auth/perm/a!b$c&d'e(f)*+,:@~/u1"),
        # y-redis would let these split the URL; ysync keeps the user id one segment
        ("r", "a/b", "http://h:1/auth/perm/r/a%2Fb"),
        ("r", "a?b#c\\d", "http://h:1/auth/perm/r/a%3Fb%23c%5Cd"),
    ],
)
def test_permission_url(room: str, user: str, expected: str) -> None:
    assert permission_url("http://h:1/auth/perm", room, user) == expected
    assert permission_url("http://h:1/auth/perm/", room, user) == expected


@pytest.mark.parametrize(("room", "user"), [("..", "u"), ("a/b", "u"), ("r", ".."),
                                            ("r", "%2e"), ("r", ""), ("r", "\udc80")])
def test_permission_url_refuses(room: str, user: str) -> None:
    with pytest.raises(AuthError):
        permission_url("http://h/perm", room, user)
