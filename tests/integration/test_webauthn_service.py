"""WebAuthnService on both backends, driven by a software authenticator (tests/softkey.py).

Contract (CONFORMANCE C12, SPEC §6): challenges of at least 64 bits, random and single use;
assertions for another origin or RP ID, a counter going backwards, another user's or an unknown
credential are refused; a user removes only their own credentials.
"""

from __future__ import annotations

import json

import pytest

from idp.domain.errors import Conflict, DomainError
from idp.services.webauthn import origin_of
from tests.softkey import SoftKey, unb64url


@pytest.fixture
def bob(svc):
    return svc.accounts.create_user("bob@example.com", "another long passphrase here", "Bob")


def register(svc, user, key: SoftKey | None = None, name: str = "Laptop"):
    key = key or SoftKey()
    credential = svc.webauthn.finish_registration(user, key.create(svc.webauthn.registration_options(user)), name)
    return key, credential


# -- registration -----------------------------------------------------------------------------


def test_registration_options_carry_a_fresh_long_challenge_and_the_rp(svc, user):
    first = svc.webauthn.registration_options(user)
    second = svc.webauthn.registration_options(user)
    assert len(unb64url(first["challenge"])) >= 16
    assert first["challenge"] != second["challenge"]
    assert first["rp"]["id"] == "localhost"
    assert unb64url(first["user"]["id"]) == user.id.encode()
    assert first["user"]["name"] == user.email
    assert first["authenticatorSelection"]["residentKey"] == "preferred"
    assert first["authenticatorSelection"]["userVerification"] == "preferred"
    assert first["excludeCredentials"] == []
    assert first["extensions"] == {"credProps": True}


def test_a_registered_passkey_is_stored_and_excluded_next_time(svc, user):
    key, credential = register(svc, user, SoftKey(backed_up=True), name="  Phone  ")
    assert credential.user_id == user.id
    assert credential.credential_id == key.id
    assert credential.name == "Phone"
    assert credential.is_passkey and credential.backed_up
    assert credential.transports == ["internal"]
    assert [c.id for c in svc.webauthn.list(user)] == [credential.id]
    options = svc.webauthn.registration_options(user)
    assert [c["id"] for c in options["excludeCredentials"]] == [key.id]


def test_a_non_discoverable_key_is_a_security_key_not_a_passkey(svc, user):
    key = SoftKey()
    options = svc.webauthn.registration_options(user)
    credential = svc.webauthn.finish_registration(user, key.create(options, resident_key=False), "")
    assert not credential.is_passkey
    assert credential.name == "Passkey"  # the default name when none is given


def test_a_registration_challenge_works_once(svc, user):
    key = SoftKey()
    response = key.create(svc.webauthn.registration_options(user))
    svc.webauthn.finish_registration(user, response, "Laptop")
    with pytest.raises(DomainError, match="took too long"):
        svc.webauthn.finish_registration(user, response, "Laptop")


@pytest.mark.parametrize("change", [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}])
def test_registration_for_another_origin_or_rp_id_is_refused(svc, user, change):
    response = SoftKey().create(svc.webauthn.registration_options(user), **change)
    with pytest.raises(DomainError, match="could not add"):
        svc.webauthn.finish_registration(user, response, "Laptop")
    assert svc.webauthn.list(user) == []


@pytest.mark.parametrize("garbage", ["", "not json", "[]", "{}", json.dumps({"id": "x", "rawId": "!!", "response": {}}),
                                     None])
def test_garbage_registration_is_a_domain_error(svc, user, garbage):
    svc.webauthn.registration_options(user)
    with pytest.raises(DomainError):
        svc.webauthn.finish_registration(user, garbage, "Laptop")


def test_the_same_authenticator_cannot_be_registered_twice(svc, user, bob):
    key, _ = register(svc, user)
    with pytest.raises(Conflict):
        svc.webauthn.finish_registration(bob, key.create(svc.webauthn.registration_options(bob)), "Stolen")


# -- authentication ---------------------------------------------------------------------------


def test_authentication_options_for_a_second_factor_and_for_passwordless(svc, user):
    key, _ = register(svc, user)
    second_factor = svc.webauthn.authentication_options("flow-1", user=user)
    assert len(unb64url(second_factor["challenge"])) >= 16
    assert second_factor["rpId"] == "localhost"
    assert [c["id"] for c in second_factor["allowCredentials"]] == [key.id]
    assert second_factor["userVerification"] == "preferred"
    passwordless = svc.webauthn.authentication_options("flow-2")
    assert passwordless["allowCredentials"] == []
    assert passwordless["userVerification"] == "required"
    assert passwordless["challenge"] != second_factor["challenge"]


def test_a_good_assertion_is_accepted_once_and_updates_the_counter(svc, user):
    key, credential = register(svc, user)
    assertion = key.get(svc.webauthn.authentication_options("flow", user=user))
    result = svc.webauthn.verify_authentication(assertion, "flow", user=user)
    assert result is not None and result.user_verified
    assert result.credential.id == credential.id
    assert result.credential.sign_count == 1 and result.credential.last_used_at is not None
    # Replaying the captured assertion: the challenge is gone.
    assert svc.webauthn.verify_authentication(assertion, "flow", user=user) is None
    # Even under a fresh challenge for the same flow, the old signature does not fit.
    svc.webauthn.authentication_options("flow", user=user)
    assert svc.webauthn.verify_authentication(assertion, "flow", user=user) is None


def test_a_passwordless_assertion_finds_its_user(svc, user):
    key, credential = register(svc, user, SoftKey(backed_up=True))
    result = svc.webauthn.verify_authentication(key.get(svc.webauthn.authentication_options("pk")), "pk")
    assert result.credential.user_id == user.id and result.credential.backed_up


@pytest.mark.parametrize("change", [{"origin": "https://evil.example"}, {"origin": "http://localhost:5001"},
                                    {"rp_id": "evil.example"}, {"user_handle": b"someone-else"}])
def test_an_assertion_for_another_origin_rp_id_or_user_handle_is_refused(svc, user, change):
    key, _ = register(svc, user)
    assertion = key.get(svc.webauthn.authentication_options("flow", user=user), **change)
    assert svc.webauthn.verify_authentication(assertion, "flow", user=user) is None


def test_a_counter_going_backwards_is_refused(svc, user):
    key, _ = register(svc, user)
    assert svc.webauthn.verify_authentication(key.get(svc.webauthn.authentication_options("f", user=user),
                                                      sign_count=5), "f", user=user)
    cloned = key.get(svc.webauthn.authentication_options("f", user=user), sign_count=3)
    assert svc.webauthn.verify_authentication(cloned, "f", user=user) is None
    equal = key.get(svc.webauthn.authentication_options("f", user=user), sign_count=5)
    assert svc.webauthn.verify_authentication(equal, "f", user=user) is None


def test_a_credential_of_another_user_is_refused(svc, user, bob):
    key, _ = register(svc, user)
    register(svc, bob)
    assertion = key.get(svc.webauthn.authentication_options("flow", user=bob))
    assert svc.webauthn.verify_authentication(assertion, "flow", user=bob) is None
    # Options made for one user cannot be used to sign in another through the same flow key.
    assertion = key.get(svc.webauthn.authentication_options("flow", user=bob))
    assert svc.webauthn.verify_authentication(assertion, "flow") is None


@pytest.mark.parametrize("garbage", ["", "null", "not json", "{}", '{"id": 1}', json.dumps({
    "id": "AAAA", "rawId": "AAAA", "type": "public-key",
    "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA", "userHandle": "%%%"}})])
def test_garbage_assertions_are_refused(svc, user, garbage):
    register(svc, user)
    svc.webauthn.authentication_options("flow", user=user)
    assert svc.webauthn.verify_authentication(garbage, "flow", user=user) is None


def test_an_unknown_credential_is_refused(svc, user):
    register(svc, user)
    stranger = SoftKey()
    stranger.user_handle = user.id.encode()
    assert svc.webauthn.verify_authentication(stranger.get(svc.webauthn.authentication_options("flow")),
                                              "flow") is None


def test_without_options_nothing_verifies(svc, user):
    key, _ = register(svc, user)
    assertion = key.get({"challenge": "AAAAAAAAAAAAAAAAAAAAAA"})
    assert svc.webauthn.verify_authentication(assertion, "never-issued", user=user) is None


# -- listing and removing ---------------------------------------------------------------------


def test_a_user_removes_only_their_own_credentials(svc, user, bob):
    _, mine = register(svc, user)
    _, theirs = register(svc, bob)
    assert svc.webauthn.remove(user, theirs.id) is False
    assert [c.id for c in svc.webauthn.list(bob)] == [theirs.id]
    assert svc.webauthn.remove(user, "no-such-id") is False
    assert svc.webauthn.remove(user, mine.id) is True
    assert svc.webauthn.list(user) == []
    assert svc.webauthn.remove(user, mine.id) is False


def test_the_origin_is_the_issuer_scheme_host_and_port():
    assert origin_of("http://localhost:5000") == "http://localhost:5000"
    assert origin_of("https://idp.example:443/tenant") == "https://idp.example"
    assert origin_of("https://idp.example:8443") == "https://idp.example:8443"
