"""ECDSA P-384 keys as JWKs, in the exact JSON shape lib0's ``0ecdsa-generate-keypair`` prints.

``AUTH_PUBLIC_KEY`` verifies tokens, ``AUTH_PRIVATE_KEY`` signs them; a bad value raises
:class:`~ysync.errors.ConfigError` naming the setting (never quoting the value).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ysync.errors import ConfigError

__all__ = [
    "ALGORITHM",
    "CURVE",
    "PrivateKey",
    "PublicKey",
    "generate_keypair",
    "keypair_env_lines",
    "load_private_key",
    "load_public_key",
]

#: The one JWS algorithm of y-redis tokens (lib0 ``crypto/jwt``).
ALGORITHM = "ES384"
#: The one curve of y-redis keys (lib0 ``crypto/ecdsa``).
CURVE = "P-384"


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A validated ECDSA P-384 public key that verifies tokens (``AUTH_PUBLIC_KEY``)."""

    key: ECKey = field(repr=False)

    def to_jwk_json(self) -> str:
        """This key as a JWK in the JSON shape lib0 ``0ecdsa-generate-keypair`` prints."""
        return _lib0_jwk_json(self.key, private=False)


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """A validated ECDSA P-384 private key that signs tokens (``AUTH_PRIVATE_KEY``)."""

    key: ECKey = field(repr=False)

    @property
    def public_key(self) -> PublicKey:
        """The public half, which verifies what this key signs."""
        return PublicKey(_bare_key(self.key.as_dict(private=False)))

    def to_jwk_json(self) -> str:
        """This key as a JWK in the JSON shape lib0 ``0ecdsa-generate-keypair`` prints."""
        return _lib0_jwk_json(self.key, private=True)


def _lib0_jwk_json(key: ECKey, *, private: bool) -> str:
    # WebCrypto's exportKey("jwk") order plus lib0's key_ops (common.js exportKeyJwk); lib0's
    # importKeyJwk passes key_ops as the key usages, so a public key must say ["verify"] only.
    data = key.as_dict(private=private)
    jwk: dict[str, Any] = {
        "key_ops": ["sign"] if private else ["verify"],
        "ext": True,
        "kty": "EC",
        "x": data["x"],
        "y": data["y"],
        "crv": CURVE,
    }
    if private:
        jwk["d"] = data["d"]
    return json.dumps(jwk, separators=(",", ":"))


def generate_keypair() -> tuple[str, str]:
    """A new ECDSA P-384 key pair as ``(public JWK JSON, private JWK JSON)``.

    The JSON is byte-for-byte the shape lib0's ``0ecdsa-generate-keypair`` prints, so
    ``AUTH_PUBLIC_KEY=<public>`` and ``AUTH_PRIVATE_KEY=<private>`` work for y-redis and ysync.
    """
    key = ECKey.generate_key(CURVE, private=True)
    return _lib0_jwk_json(key, private=False), _lib0_jwk_json(key, private=True)


def keypair_env_lines(public_jwk: str, private_jwk: str, name: str = "auth") -> str:
    """The two ``<NAME>_PUBLIC_KEY=...`` / ``<NAME>_PRIVATE_KEY=...`` lines lib0 prints."""
    prefix = f"{name.upper()}_" if name else ""
    return f"{prefix}PUBLIC_KEY={public_jwk}\n{prefix}PRIVATE_KEY={private_jwk}"


def load_public_key(jwk_json: str, *, setting: str = "AUTH_PUBLIC_KEY") -> PublicKey:
    """Parse and check a P-384 public JWK; :class:`ConfigError` naming ``setting`` otherwise."""
    jwk = _parse_jwk(jwk_json, setting, operation="verify")
    return PublicKey(_import_ec(jwk, setting))


def load_private_key(jwk_json: str, *, setting: str = "AUTH_PRIVATE_KEY") -> PrivateKey:
    """Parse and check a P-384 private JWK; :class:`ConfigError` naming ``setting`` otherwise."""
    jwk = _parse_jwk(jwk_json, setting, operation="sign")
    return PrivateKey(_import_ec(jwk, setting))


def _parse_jwk(jwk_json: str, setting: str, *, operation: str) -> dict[str, Any]:
    # Messages never quote the value: it may be a private key.
    try:
        jwk = json.loads(jwk_json)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"setting {setting}: not valid JSON (expected a JWK such as lib0's "
            "0ecdsa-generate-keypair prints)"
        ) from exc
    if not isinstance(jwk, dict):
        raise ConfigError(f"setting {setting}: expected a JSON object (a JWK)")
    if jwk.get("kty") != "EC":
        raise ConfigError(f"setting {setting}: expected an EC key (kty 'EC'), got kty "
                          f"{_short(jwk.get('kty'))}")
    if jwk.get("crv") != CURVE:
        raise ConfigError(f"setting {setting}: expected curve {CURVE}, got crv "
                          f"{_short(jwk.get('crv'))}")
    if operation == "verify" and "d" in jwk:
        raise ConfigError(
            f"setting {setting}: holds a private key (it has 'd'); give the PUBLIC key here "
            "and keep the private one secret"
        )
    if operation == "sign" and not isinstance(jwk.get("d"), str):
        raise ConfigError(f"setting {setting}: not a private key (no 'd' member)")
    if "alg" in jwk and jwk["alg"] != ALGORITHM:
        raise ConfigError(f"setting {setting}: key is for alg {_short(jwk['alg'])}, "
                          f"tokens use {ALGORITHM}")
    if "use" in jwk and jwk["use"] != "sig":
        raise ConfigError(f"setting {setting}: key 'use' must be 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or operation not in key_ops):
        raise ConfigError(f"setting {setting}: key_ops must include {operation!r}")
    return jwk


def _bare_key(jwk: Mapping[str, Any]) -> ECKey:
    # Only the key material: the usages were checked by _parse_jwk, and a leftover "key_ops"
    # (lib0 writes ["sign"] or ["verify"]) would make joserfc refuse the other operation.
    return ECKey.import_key({name: jwk[name] for name in ("kty", "crv", "x", "y", "d")
                             if name in jwk})


def _import_ec(jwk: dict[str, Any], setting: str) -> ECKey:
    try:
        return _bare_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise ConfigError(f"setting {setting}: not a valid P-384 key ({type(exc).__name__})") \
            from exc


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

