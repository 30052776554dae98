"""JWS compact serialization for the tokens this server writes, on `cryptography` directly.

Every access token is signed once and verified on each UserInfo and introspection call; a general
JOSE library parses the header twice and walks its registries on each of those. Here the header is a
prepared segment per key and token type, and the key ring sends a token down this path only when its
header is byte-identical to one the ring writes: the algorithm comes from our own key, never from the
token, so `alg: none`, HMAC-with-the-public-key and every other header trick cannot reach it (any
other header goes through joserfc, see KeyRing.verify).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

# RFC 7515 §2: base64url without padding.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 7518 §3.4: an ES256 signature is R and S, 32 bytes each.
_P256_HALF = 32


class MalformedJWS(ValueError):
    """A segment that is not base64url, or claims that are not a JSON object."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise MalformedJWS("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedJWS("not base64url") from exc


def header_segment(alg: str, kid: str, typ: str) -> str:
    return b64url(json.dumps({"alg": alg, "kid": kid, "typ": typ}, separators=(",", ":")).encode())


def sign(alg: str, private_key, header: str, claims: dict) -> str:
    signing_input = header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
    data = signing_input.encode("ascii")
    if alg == "ES256":
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_HALF, "big") + s.to_bytes(_P256_HALF, "big")
    elif alg == "RS256":
        signature = private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError(f"unsupported signing algorithm {alg}")
    return signing_input + "." + b64url(signature)


def signature_valid(alg: str, public_key, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "ES256":
            if len(signature) != 2 * _P256_HALF:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:_P256_HALF], "big"),
                                       int.from_bytes(signature[_P256_HALF:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        elif alg == "RS256":
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verified_claims(alg: str, public_key, token: str) -> dict | None:
    """The claims of `header.payload.signature` when the signature is `public_key`'s, else None.
    Raises MalformedJWS for a token that is not even well-formed."""
    header, payload, signature = token.split(".")
    try:
        signing_input = (header + "." + payload).encode("ascii")
    except UnicodeEncodeError as exc:
        raise MalformedJWS("not base64url") from exc
    if not signature_valid(alg, public_key, signing_input, b64url_decode(signature)):
        return None
    # Parsed only once the signature holds: nothing unauthenticated reaches the JSON parser.
    try:
        claims = json.loads(b64url_decode(payload))
    except ValueError as exc:
        raise MalformedJWS("claims are not JSON") from exc
    if not isinstance(claims, dict):
        raise MalformedJWS("claims are not an object")
    return claims
