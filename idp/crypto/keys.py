"""Signing keys: generate, sign JWTs, verify JWTs issued by this server, publish JWKS."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.jws import extract_compact

from idp.crypto.secrets import random_token

SUPPORTED_ALGS = ("ES256", "RS256")


class InvalidJWT(Exception):
    """A JWT that is malformed, not signed by one of our keys, or of the wrong kind."""


@dataclass(frozen=True)
class KeyMaterial:
    kid: str
    alg: str
    private_jwk: str
    public_jwk: str


def generate_key(alg: str) -> KeyMaterial:
    if alg not in SUPPORTED_ALGS:
        raise ValueError(f"unsupported signing algorithm {alg}")
    kid = random_token(12)
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=params, private=True)
    else:
        key = RSAKey.generate_key(2048, parameters=params, private=True)
    return KeyMaterial(
        kid=kid,
        alg=alg,
        private_jwk=json.dumps(key.as_dict(private=True)),
        public_jwk=json.dumps(key.as_dict(private=False)),
    )


# Each process rereads the key table every 30 s; importing (and so validating) an RSA private key
# costs milliseconds, so a key already seen is taken from here. Keyed by the JWK itself: a changed key
# is a new entry.
@functools.lru_cache(maxsize=32)
def _import(jwk_json: str):
    data = json.loads(jwk_json)
    return (ECKey if data["kty"] == "EC" else RSAKey).import_key(data)


class KeyRing:
    """The keys in use: one active key per algorithm, plus retired public keys still published."""

    def __init__(self, active: list[KeyMaterial], published: list[KeyMaterial]):
        self._active = {m.alg: _import(m.private_jwk) for m in active}
        self._active_kid = {m.alg: m.kid for m in active}
        public = [json.loads(m.public_jwk) for m in published]
        self._verify_set = KeySet.import_key_set({"keys": public}) if public else None
        self.jwks_bytes = json.dumps({"keys": public}, separators=(",", ":")).encode()

    def has(self, alg: str) -> bool:
        return alg in self._active

    def sign(self, claims: dict, alg: str, typ: str = "JWT") -> str:
        if alg not in self._active:
            raise LookupError(f"no active {alg} signing key; run `idp keys rotate`")
        header = {"alg": alg, "kid": self._active_kid[alg], "typ": typ}
        return jwt.encode(header, claims, self._active[alg], algorithms=[alg])

    def verify(self, token: str, typ: str | None = None) -> tuple[dict, dict]:
        """Signature check only; the caller decides on expiry and audience."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise InvalidJWT("not a compact JWS")
        if self._verify_set is None:
            raise InvalidJWT("no published keys")
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidJWT(str(exc)) from exc
        if header.get("alg") not in SUPPORTED_ALGS:
            raise InvalidJWT("algorithm not accepted")
        if typ is not None and str(header.get("typ", "")).lower() not in (typ.lower(), "application/" + typ.lower()):
            raise InvalidJWT("wrong token type")
        try:
            decoded = jwt.decode(token, self._verify_set, algorithms=list(SUPPORTED_ALGS))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidJWT(str(exc)) from exc
        if not isinstance(decoded.claims, dict):
            raise InvalidJWT("claims are not an object")
        return dict(decoded.header), dict(decoded.claims)
