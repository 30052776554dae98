"""ID-token and UserInfo claims."""

from __future__ import annotations

import hashlib

from idp.crypto.compact import b64url
from idp.storage.models import User

SCOPE_CLAIMS = {
    "profile": ("name", "updated_at"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number", "phone_number_verified"),
}
CLAIMS_SUPPORTED = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash",
    "name", "updated_at", "email", "email_verified", "phone_number", "phone_number_verified",
)  # fmt: skip


def half_hash(value: str, alg: str) -> str:
    """at_hash (OIDC Core §3.1.3.6): left half of the hash matching the signing algorithm's size."""
    digest = hashlib.sha256(value.encode("ascii")).digest()  # ES256 and RS256 both use SHA-256
    return b64url(digest[: len(digest) // 2])


def user_claims(user: User, scopes: set[str]) -> dict:
    claims: dict = {"sub": user.id}
    if "profile" in scopes:
        if user.name:
            claims["name"] = user.name
        claims["updated_at"] = int(user.updated_at.timestamp())
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    if "phone" in scopes and user.phone:
        claims["phone_number"] = user.phone
        claims["phone_number_verified"] = bool(user.phone_verified)
    return claims


def id_token_claims(
    *,
    issuer: str,
    client_id: str,
    user_id: str,
    now: int,
    ttl: int,
    auth_time: int | None,
    nonce: str | None,
    acr: str | None,
    amr,
    sid: str | None,
    access_token: str | None,
    alg: str,
) -> dict:
    # Only protocol claims: profile data goes to UserInfo, so the ID token carries nothing unrequested.
    claims = {"iss": issuer, "sub": user_id, "aud": client_id, "azp": client_id, "iat": now, "exp": now + ttl}
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if nonce:
        claims["nonce"] = nonce
    if acr:
        claims["acr"] = acr
    if amr:
        claims["amr"] = list(amr)
    if sid:
        claims["sid"] = sid
    if access_token:
        claims["at_hash"] = half_hash(access_token, alg)
    return claims
