"""Signing keys: generate, sign JWTs, verify JWTs issued by this server, publish JWKS."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.jws import extract_compact

from idp.crypto import compact
from idp.crypto.secrets import random_token

SUPPORTED_ALGS = ("ES256", "RS256")
# The `typ` of every JWT this server writes: ID tokens, access tokens (RFC 9068), logout tokens.
WRITTEN_TYPES = ("JWT", "at+jwt", "logout+jwt")
ACCESS_TOKEN_TYPE = "at+jwt"
# Access tokens whose signature a ring has checked, kept per ring (see KeyRing._verify_written).
VERIFIED_ACCESS_TOKENS_KEPT = 2048


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
        self._active = {m.alg: (m.kid, _import(m.private_jwk).private_key) for m in active}
        self._header_to_write = {(m.alg, typ): compact.header_segment(m.alg, m.kid, typ)
                                 for m in active for typ in WRITTEN_TYPES}
        public = [json.loads(m.public_jwk) for m in published]
        self._verify_set = KeySet.import_key_set({"keys": public}) if public else None
        self.jwks_bytes = json.dumps({"keys": public}, separators=(",", ":")).encode()
        # The header segments this ring writes, so a token of ours is recognised by its first segment.
        self._written_headers = {
            compact.header_segment(m.alg, m.kid, typ): ({"alg": m.alg, "kid": m.kid, "typ": typ},
                                                        _import(m.public_jwk).public_key)
            for m in published if m.alg in SUPPORTED_ALGS for typ in WRITTEN_TYPES
        }
        self._verified_access_tokens: OrderedDict[bytes, dict] = OrderedDict()

    def has(self, alg: str) -> bool:
        return alg in self._active

    def sign(self, claims: dict, alg: str, typ: str = "JWT") -> str:
        if alg not in self._active:
            raise LookupError(f"no active {alg} signing key; run `idp keys rotate`")
        kid, private_key = self._active[alg]
        header = self._header_to_write.get((alg, typ)) or compact.header_segment(alg, kid, typ)
        return compact.sign(alg, private_key, header, claims)

    def verify(self, token: str, typ: str | None = None) -> tuple[dict, dict]:
        """Signature check only; the caller decides on expiry and audience."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise InvalidJWT("not a compact JWS")
        written = self._written_headers.get(token[:token.index(".")])
        if written is not None:
            return self._verify_written(token, typ, *written)
        return self._verify_any_header(token, typ)

    def _verify_written(self, token: str, typ: str | None, header: dict, public_key) -> tuple[dict, dict]:
        """A header byte-identical to one this ring writes: its key and algorithm are ours.

        An access token is presented many times in its ten minutes (a resource server introspects
        it on each call it guards, an app reads UserInfo and the sessions API with it), and each
        ES256 check costs about 80 µs. The claims this ring verified for the very same bytes
        (keyed by their SHA-256) are kept, so the check is the same one: same bytes, same keys.
        The ring is replaced at every reread of the key table (30 s), and what it kept goes with
        it, so a key no longer published stops verifying as soon as it would have. Expiry,
        issuer and revocation are the caller's, on every call. Failures are not kept."""
        if typ is not None and header["typ"].lower() != typ.lower():
            raise InvalidJWT("wrong token type")
        kept = header["typ"] == ACCESS_TOKEN_TYPE
        if kept:
            digest = hashlib.sha256(token.encode()).digest()
            claims = self._verified_access_tokens.get(digest)
            if claims is not None:
                return dict(header), dict(claims)
        try:
            claims = compact.verified_claims(header["alg"], public_key, token)
        except compact.MalformedJWS as exc:
            raise InvalidJWT(str(exc)) from exc
        if claims is None:
            raise InvalidJWT("bad signature")
        if kept:
            self._keep_verified(digest, claims)
        return dict(header), claims

    def _keep_verified(self, digest: bytes, claims: dict) -> None:
        # Oldest out first. Each step is atomic under the GIL, so threads need no lock here.
        verified = self._verified_access_tokens
        if len(verified) >= VERIFIED_ACCESS_TOKENS_KEPT:
            try:
                verified.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                pass
        verified[digest] = dict(claims)

    def _verify_any_header(self, token: str, typ: str | None) -> tuple[dict, dict]:
        """Tokens signed before this ring wrote its own headers, or headers of another shape: the
        general JOSE path, which takes the key by `kid` and accepts only our algorithms."""
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
