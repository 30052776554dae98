"""Random values handed out (codes, tokens, session secrets) and how they are kept at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def random_token(nbytes: int = 32) -> str:
    """URL-safe random string; 32 bytes give 256 bits, far above the 128 the specs ask for."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    """At-rest form of high-entropy values: a database leak yields no usable code or token."""
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hash(key: str, value: str) -> str:
    """Client secrets are random 256-bit values: a keyed fast hash suffices, argon2 would only cost time."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
