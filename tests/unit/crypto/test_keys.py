"""Signing keys: sign and verify our own JWTs, refuse everything else, publish only public parts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from idp.crypto.keys import InvalidJWT, KeyRing, generate_key

CLAIMS = {"iss": "http://localhost:5000", "sub": "user-1", "aud": "client-1", "iat": 1700000000}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module")
def es():
    return generate_key("ES256")


@pytest.fixture(scope="module")
def rs():
    return generate_key("RS256")


@pytest.fixture(scope="module")
def ring(es, rs):
    return KeyRing(active=[es, rs], published=[es, rs])


@pytest.fixture(scope="module")
def foreign():
    other = generate_key("ES256")
    return KeyRing(active=[other], published=[other])


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("alg, kty", [("ES256", "EC"), ("RS256", "RSA")])
def test_generate_key(alg, kty):
    material = generate_key(alg)
    assert material.alg == alg and len(material.kid) >= 16
    public = json.loads(material.public_jwk)
    private = json.loads(material.private_jwk)
    assert public["kty"] == kty and public["kid"] == material.kid
    assert public["alg"] == alg and public["use"] == "sig"
    assert "d" in private and not PRIVATE_MEMBERS & public.keys()


def test_generated_kids_differ():
    assert generate_key("ES256").kid != generate_key("ES256").kid


@pytest.mark.parametrize("alg", ["HS256", "none", "ES512", "PS256", ""])
def test_generate_refuses_other_algorithms(alg):
    with pytest.raises(ValueError):
        generate_key(alg)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_sign_verify_round_trip(ring, es, rs, alg):
    token = ring.sign(CLAIMS, alg)
    header, claims = ring.verify(token)
    assert claims == CLAIMS
    assert header == {"alg": alg, "kid": (es if alg == "ES256" else rs).kid, "typ": "JWT"}


def test_sign_with_explicit_typ_and_verify_requires_it(ring):
    token = ring.sign(CLAIMS, "ES256", typ="at+jwt")
    assert ring.verify(token, typ="at+jwt")[0]["typ"] == "at+jwt"
    with pytest.raises(InvalidJWT):
        ring.verify(token, typ="logout+jwt")


def test_verify_refuses_the_wrong_typ(ring):
    id_token = ring.sign(CLAIMS, "ES256")
    with pytest.raises(InvalidJWT, match="type"):
        ring.verify(id_token, typ="at+jwt")


def test_sign_without_active_key_for_alg(es):
    only_es = KeyRing(active=[es], published=[es])
    assert only_es.has("ES256") and not only_es.has("RS256")
    with pytest.raises(LookupError):
        only_es.sign(CLAIMS, "RS256")


def test_retired_published_key_still_verifies(es, rs):
    old_ring = KeyRing(active=[es], published=[es])
    token = old_ring.sign(CLAIMS, "ES256")
    fresh = generate_key("ES256")
    rotated = KeyRing(active=[fresh], published=[fresh, es])
    assert rotated.verify(token)[1] == CLAIMS
    unpublished = KeyRing(active=[fresh], published=[fresh])
    with pytest.raises(InvalidJWT):
        unpublished.verify(token)


def test_verify_rejects_token_from_a_foreign_key(ring, foreign):
    with pytest.raises(InvalidJWT):
        ring.verify(foreign.sign(CLAIMS, "ES256"))


def test_verify_rejects_foreign_key_claiming_our_kid(ring, es):
    impostor = ECKey.generate_key("P-256", private=True)
    token = jwt.encode({"alg": "ES256", "kid": es.kid, "typ": "JWT"}, CLAIMS, impostor, algorithms=["ES256"])
    with pytest.raises(InvalidJWT):
        ring.verify(token)


def test_verify_rejects_tampered_claims(ring):
    header, _, signature = ring.sign(CLAIMS, "ES256").split(".")
    forged = ".".join([header, _b64({**CLAIMS, "sub": "admin"}), signature])
    with pytest.raises(InvalidJWT):
        ring.verify(forged)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_verify_rejects_alg_none(ring, es, alg):
    for signature in ("", _b64(b"x")):
        token = ".".join([_b64({"alg": alg, "kid": es.kid, "typ": "JWT"}), _b64(CLAIMS), signature])
        with pytest.raises(InvalidJWT):
            ring.verify(token)


def test_verify_rejects_hs256_signed_with_our_public_key(ring, rs):
    # Algorithm confusion: the public JWK is known to everyone, so it must never serve as an HMAC secret.
    signing_input = _b64({"alg": "HS256", "kid": rs.kid, "typ": "JWT"}) + "." + _b64(CLAIMS)
    for secret in (rs.public_jwk.encode(), ring.jwks_bytes):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidJWT):
            ring.verify(signing_input + "." + _b64(mac))


@pytest.mark.parametrize(
    "garbage",
    ["", "a.b.c", "..", "not-a-jwt", "a.b", "a.b.c.d", "eyJhbGciOiJFUzI1NiJ9.e30.", "%%%.%%%.%%%",
     "x" * 20000 + ".a.b", None, 12345, b"a.b.c"],
)
def test_verify_rejects_garbage(ring, garbage):
    with pytest.raises(InvalidJWT):
        ring.verify(garbage)


def test_verify_rejects_non_object_claims(ring, es):
    # Signed with our own key, so only the claims check can refuse it.
    key = ECKey.import_key(json.loads(es.private_jwk))
    token = jws.serialize_compact({"alg": "ES256", "kid": es.kid, "typ": "JWT"}, b"[1,2,3]", key,
                                  algorithms=["ES256"])
    with pytest.raises(InvalidJWT):
        ring.verify(token)


def test_ring_without_published_keys_verifies_nothing(ring):
    empty = KeyRing(active=[], published=[])
    with pytest.raises(InvalidJWT):
        empty.verify(ring.sign(CLAIMS, "ES256"))


def test_jwks_holds_only_public_parts(ring, es, rs):
    document = json.loads(ring.jwks_bytes)
    assert set(document) == {"keys"}
    assert {k["kid"] for k in document["keys"]} == {es.kid, rs.kid}
    for key in document["keys"]:
        assert not PRIVATE_MEMBERS & key.keys(), key
        assert key["use"] == "sig" and key["alg"] in ("ES256", "RS256")
    assert b'"d"' not in ring.jwks_bytes


# -- the compact path for headers the ring writes ------------------------------------------------


def _segments(token: str) -> list[str]:
    return token.split(".")


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_tokens_we_write_verify_with_a_general_jose_library(ring, alg):
    # Relying apps check our tokens with whatever library they use, against the published JWKS.
    token = ring.sign(CLAIMS, alg, typ="at+jwt")
    decoded = jwt.decode(token, KeySet.import_key_set(json.loads(ring.jwks_bytes)), algorithms=[alg])
    assert decoded.claims == CLAIMS and decoded.header["typ"] == "at+jwt"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_tokens_written_by_a_general_jose_library_still_verify(ring, es, rs, alg):
    # Tokens issued before the ring wrote its own headers carry the members in another order.
    material = es if alg == "ES256" else rs
    key = (ECKey if alg == "ES256" else RSAKey).import_key(json.loads(material.private_jwk))
    token = jwt.encode({"typ": "at+jwt", "kid": material.kid, "alg": alg}, CLAIMS, key, algorithms=[alg])
    assert _segments(token)[0] != _segments(ring.sign(CLAIMS, alg, typ="at+jwt"))[0]
    assert ring.verify(token, typ="at+jwt")[1] == CLAIMS


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_changed_signature_byte_is_refused(ring, alg):
    header, payload, signature = _segments(ring.sign(CLAIMS, alg))
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    for index in (0, len(raw) // 2, len(raw) - 1):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        with pytest.raises(InvalidJWT):
            ring.verify(".".join([header, payload, _b64(bytes(changed))]))


@pytest.mark.parametrize("signature", [
    "", "AA", _b64(b"\x00" * 64), _b64(b"\x00" * 63), _b64(b"\xff" * 64), _b64(b"\x01" * 65),
    "A" * 85 + "=", "A" * 86 + "!", "A" * 85,
])
def test_malformed_es256_signatures_are_refused(ring, signature):
    header, payload, _ = _segments(ring.sign(CLAIMS, "ES256"))
    with pytest.raises(InvalidJWT):
        ring.verify(".".join([header, payload, signature]))


def test_our_header_with_another_keys_signature_is_refused(ring, rs):
    # Our ES256 header over a payload signed by our own RSA key: the key follows the header, so no mix.
    es_header = _segments(ring.sign(CLAIMS, "ES256"))[0]
    _, payload, rs_signature = _segments(ring.sign(CLAIMS, "RS256"))
    with pytest.raises(InvalidJWT):
        ring.verify(".".join([es_header, payload, rs_signature]))


def test_non_ascii_in_a_token_with_our_header_is_refused(ring):
    header, payload, signature = _segments(ring.sign(CLAIMS, "ES256"))
    for token in (f"{header}.{payload}é.{signature}", f"{header}.{payload}.{signature}é"):
        with pytest.raises(InvalidJWT):
            ring.verify(token)


def test_typ_is_checked_on_the_compact_path(ring):
    logout = ring.sign(CLAIMS, "ES256", typ="logout+jwt")
    assert ring.verify(logout, typ="logout+jwt")[0]["typ"] == "logout+jwt"
    for other in ("at+jwt", "JWT"):
        with pytest.raises(InvalidJWT, match="type"):
            ring.verify(logout, typ=other)


def test_a_header_of_a_key_no_longer_published_is_refused(es):
    old = KeyRing(active=[es], published=[es])
    token = old.sign(CLAIMS, "ES256")
    fresh = generate_key("ES256")
    with pytest.raises(InvalidJWT):
        KeyRing(active=[fresh], published=[fresh]).verify(token)


# -- access tokens a ring has already checked ------------------------------------------------------


@pytest.fixture
def signature_checks(monkeypatch):
    """How many times the signature of a token with our header was actually computed."""
    from idp.crypto import compact

    checks = []
    real = compact.verified_claims

    def counting(alg, public_key, token):
        checks.append(token)
        return real(alg, public_key, token)

    monkeypatch.setattr(compact, "verified_claims", counting)
    return checks


def _fresh_ring():
    key = generate_key("ES256")
    return key, KeyRing(active=[key], published=[key])


def test_an_access_token_is_checked_once_per_ring(signature_checks):
    _, ring = _fresh_ring()
    token = ring.sign(CLAIMS, "ES256", typ="at+jwt")
    first = ring.verify(token, typ="at+jwt")
    first[1]["sub"] = "changed by a caller"
    again = ring.verify(token, typ="at+jwt")
    assert again == ({"alg": "ES256", "kid": first[0]["kid"], "typ": "at+jwt"}, CLAIMS)
    again[1]["sub"] = "changed by another caller"
    assert ring.verify(token, typ="at+jwt")[1] == CLAIMS
    assert signature_checks == [token]


def test_other_bytes_than_a_kept_token_are_checked_and_refused(signature_checks):
    _, ring = _fresh_ring()
    token = ring.sign(CLAIMS, "ES256", typ="at+jwt")
    ring.verify(token, typ="at+jwt")
    header, payload, signature = _segments(token)
    forged_payload = _b64({**CLAIMS, "sub": "admin"})
    last = "A" if signature[-1] != "A" else "Q"
    for forged in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{signature[:-1]}{last}"):
        with pytest.raises(InvalidJWT):
            ring.verify(forged, typ="at+jwt")
    assert len(signature_checks) == 3


def test_a_kept_access_token_is_still_refused_as_another_type():
    _, ring = _fresh_ring()
    token = ring.sign(CLAIMS, "ES256", typ="at+jwt")
    ring.verify(token, typ="at+jwt")
    for other in ("JWT", "logout+jwt"):
        with pytest.raises(InvalidJWT, match="type"):
            ring.verify(token, typ=other)


def test_failures_and_other_types_are_checked_every_time(signature_checks):
    _, ring = _fresh_ring()
    id_token = ring.sign(CLAIMS, "ES256")
    header, payload, _ = _segments(ring.sign(CLAIMS, "ES256", typ="at+jwt"))
    bad = ".".join([header, payload, _b64(bytes([1]) * 64)])
    for _ in range(2):
        ring.verify(id_token)
        with pytest.raises(InvalidJWT):
            ring.verify(bad, typ="at+jwt")
    assert len(signature_checks) == 4


def test_a_new_ring_keeps_nothing_and_refuses_keys_it_no_longer_publishes(signature_checks):
    key, ring = _fresh_ring()
    token = ring.sign(CLAIMS, "ES256", typ="at+jwt")
    ring.verify(token, typ="at+jwt")
    KeyRing(active=[key], published=[key]).verify(token, typ="at+jwt")
    assert len(signature_checks) == 2
    successor = generate_key("ES256")
    with pytest.raises(InvalidJWT):
        KeyRing(active=[successor], published=[successor]).verify(token, typ="at+jwt")


def test_a_ring_keeps_a_bounded_number_of_tokens(monkeypatch, signature_checks):
    from idp.crypto import keys

    monkeypatch.setattr(keys, "VERIFIED_ACCESS_TOKENS_KEPT", 4)
    _, ring = _fresh_ring()
    tokens = [ring.sign({**CLAIMS, "jti": str(n)}, "ES256", typ="at+jwt") for n in range(10)]
    for token in tokens:
        ring.verify(token, typ="at+jwt")
    assert len(ring._verified_access_tokens) == 4
    signature_checks.clear()
    ring.verify(tokens[-1], typ="at+jwt")  # among the newest: kept
    ring.verify(tokens[0], typ="at+jwt")  # the oldest went first
    assert signature_checks == [tokens[0]]
