"""Forging JWTs the way an attacker or a foreign library would, for the auth tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ysync.auth import PrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign_ecdsa(header: dict[str, Any], payload: bytes, key: ec.EllipticCurvePrivateKey,
               digest: hashes.HashAlgorithm) -> str:
    """A JWS signed with any EC key and hash, raw r||s as JWS wants (no joserfc checks)."""
    signing_input = f"{b64json(header)}.{b64(payload)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(digest)))
    size = (key.curve.key_size + 7) // 8
    return f"{signing_input}.{b64(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"


def es384(private_key: PrivateKey, payload: dict[str, Any] | bytes,
          header: dict[str, Any] | None = None) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    native = private_key.key.private_key
    assert isinstance(native, ec.EllipticCurvePrivateKey)
    return sign_ecdsa(header or {"alg": "ES384", "typ": "JWT"}, raw, native, hashes.SHA384())
