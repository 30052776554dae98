"""Passkey routes through the test client, on both backends, with a software authenticator.

Contract (SPEC §4, §6.1, §6.9, §6.12; CONFORMANCE C12, C13): "Sign in with a passkey" signs in
without a password only with a user-verifying passkey and yields amr hwk/swk + mfa; a security
key is a second factor after the password; registering needs a fresh sign-in and the first
factor ends every other session; a user removes only their own keys; bad input never gives a 500.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import has_app_context
from sqlalchemy import select

from idp.extensions import db
from idp.storage.models import AuditEvent, BrowserSession, User, WebAuthnCredential, utcnow
from tests.softkey import SoftKey
from tests.support import PASSWORD, csrf_from

ALICE, BOB = "alice@example.com", "bob@example.com"
JSON = {"Accept": "application/json"}
FAILED = "We could not sign you in with that passkey."


# The shared `user` fixture keeps an app context pushed for the whole test, and every test-client
# request would then share its `g`; these helpers set up and get out instead.

def create_user(app, email: str) -> str:
    with app.app_context():
        return app.extensions["idp"].accounts.create_user(email, PASSWORD).id


def enrol(app, user_id: str, key: SoftKey | None = None, name: str = "Laptop") -> SoftKey:
    key = key or SoftKey()
    with app.app_context():
        svc = app.extensions["idp"]
        user = svc.accounts.get(user_id)
        svc.webauthn.finish_registration(user, key.create(svc.webauthn.registration_options(user)), name)
    return key


def page(client, path: str) -> tuple[str, str]:
    assert not has_app_context()
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    html = response.get_data(as_text=True)
    return html, csrf_from(html)


def password_sign_in(client, email: str, next_url: str = "/account"):
    _, token = page(client, "/login")
    return client.post("/login", data={"csrf_token": token, "next": next_url, "username": email,
                                       "password": PASSWORD})


def passkey_sign_in(client, key: SoftKey, next_url: str = "/account", **assertion_changes):
    _, token = page(client, "/login")
    options = client.post("/login/passkey/options", headers={"X-CSRFToken": token, **JSON})
    assert options.status_code == 200 and options.is_json
    credential = key.get(options.get_json(), **assertion_changes)
    return client.post("/login/passkey", data={"csrf_token": token, "next": next_url, "credential": credential})


def sessions_of(app, user_id: str) -> list[BrowserSession]:
    with app.app_context():
        return list(db.session.scalars(select(BrowserSession).where(BrowserSession.user_id == user_id)
                                       .order_by(BrowserSession.created_at)))


def assert_friendly(response) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code < 500
    assert "Traceback" not in body and 'File "' not in body


# -- passwordless -----------------------------------------------------------------------------


@pytest.mark.parametrize("backed_up, expected", [(False, "hwk"), (True, "swk")])
def test_a_user_verifying_passkey_signs_in_without_a_password(app, backed_up, expected):
    alice = create_user(app, ALICE)
    key = enrol(app, alice, SoftKey(backed_up=backed_up))
    client = app.test_client()
    html, token = page(client, "/login")
    assert 'id="passkey-sign-in"' in html and "Sign in with a passkey" in html
    options = client.post("/login/passkey/options", headers={"X-CSRFToken": token, **JSON}).get_json()
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    assert options["rpId"] == "localhost"
    response = client.post("/login/passkey", data={"csrf_token": token, "next": "/account/devices",
                                                   "credential": key.get(options)})
    assert response.status_code == 303 and response.headers["Location"] == "/account/devices"
    assert ALICE in client.get("/account").get_data(as_text=True)
    (session,) = sessions_of(app, alice)
    assert session.amr == [expected, "mfa"] and session.acr == "urn:idp:acr:mfa"


def test_a_passkey_without_user_verification_is_not_enough_alone(app):
    key = enrol(app, create_user(app, ALICE), SoftKey(user_verified=False))
    response = passkey_sign_in(app.test_client(), key)
    assert response.status_code == 200 and FAILED in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers or "idp_session=" not in response.headers["Set-Cookie"]


def test_a_replayed_assertion_does_not_sign_in(app):
    alice = create_user(app, ALICE)
    key = enrol(app, alice)
    client = app.test_client()
    _, token = page(client, "/login")
    options = client.post("/login/passkey/options", headers={"X-CSRFToken": token, **JSON}).get_json()
    captured = key.get(options)
    assert client.post("/login/passkey", data={"csrf_token": token, "credential": captured}).status_code == 303
    other = app.test_client()
    _, token = page(other, "/login")
    other.post("/login/passkey/options", headers={"X-CSRFToken": token, **JSON})
    replay = other.post("/login/passkey", data={"csrf_token": token, "credential": captured})
    assert replay.status_code == 200 and FAILED in replay.get_data(as_text=True)
    assert len(sessions_of(app, alice)) == 1


def test_a_disabled_account_cannot_use_its_passkey(app):
    alice = create_user(app, ALICE)
    key = enrol(app, alice)
    with app.app_context():
        db.session.get(User, alice).disabled_at = utcnow()
        db.session.commit()
    response = passkey_sign_in(app.test_client(), key)
    assert response.status_code == 200 and FAILED in response.get_data(as_text=True)


@pytest.mark.parametrize("credential", ["", "garbage", "{}", '{"id": "AAAA", "rawId": "AAAA", "response": []}'])
def test_bad_passkey_posts_get_the_sign_in_page(app, credential):
    enrol(app, create_user(app, ALICE))
    client = app.test_client()
    _, token = page(client, "/login")
    # Once without asking for options first, once after.
    for _ in range(2):
        response = client.post("/login/passkey", data={"csrf_token": token, "credential": credential})
        assert_friendly(response)
        assert response.status_code == 200 and FAILED in response.get_data(as_text=True)
        client.post("/login/passkey/options", headers={"X-CSRFToken": token, **JSON})


def test_json_endpoints_refuse_a_missing_csrf_token_with_json(app):
    client = app.test_client()
    page(client, "/login")
    for path in ("/login/passkey/options", "/login/2fa/webauthn/options", "/account/security/passkeys/options"):
        response = client.post(path, headers=JSON)
        assert response.status_code == 400 and response.is_json, path
        assert response.get_json()["error"] == "invalid_request"


# -- second factor ----------------------------------------------------------------------------


def test_a_security_key_as_second_factor_after_the_password(app):
    alice = create_user(app, ALICE)
    key = enrol(app, alice)
    client = app.test_client()
    response = password_sign_in(client, ALICE, "/account/devices")
    assert response.status_code == 303 and response.headers["Location"].startswith("/login/2fa")
    html, token = page(client, "/login/2fa")
    options_url = re.search(r'data-options-url="([^"]+)"', html).group(1)
    assert options_url == "/login/2fa/webauthn/options" and "webauthn.js" in html
    options = client.post(options_url, headers={"X-CSRFToken": token, **JSON}).get_json()
    assert [c["id"] for c in options["allowCredentials"]] == [key.id]
    response = client.post("/login/2fa", data={"csrf_token": token, "method": "webauthn",
                                                "credential": key.get(options)})
    assert response.status_code == 303 and response.headers["Location"] == "/account/devices"
    (session,) = sessions_of(app, alice)
    assert session.amr == ["pwd", "hwk", "mfa"]


def test_another_users_key_is_a_wrong_second_factor(app):
    alice = create_user(app, ALICE)
    enrol(app, alice)
    mallory_key = enrol(app, create_user(app, BOB))
    client = app.test_client()
    password_sign_in(client, ALICE)
    _, token = page(client, "/login/2fa")
    options = client.post("/login/2fa/webauthn/options", headers={"X-CSRFToken": token, **JSON}).get_json()
    response = client.post("/login/2fa", data={"csrf_token": token, "method": "webauthn",
                                                "credential": mallory_key.get(options)})
    assert response.status_code == 200 and not sessions_of(app, alice)


def test_second_factor_options_without_a_sign_in_in_progress(app):
    client = app.test_client()
    _, token = page(client, "/login")
    response = client.post("/login/2fa/webauthn/options", headers={"X-CSRFToken": token, **JSON})
    assert response.status_code == 400 and response.is_json
    assert "sign in again" in response.get_json()["error_description"]


# -- the security page ------------------------------------------------------------------------


def register_through_pages(client, key: SoftKey, name: str = "Office key"):
    html, token = page(client, "/account/security")
    finish_url = re.search(r'data-finish-url="([^"]+)"', html).group(1)
    options = client.post("/account/security/passkeys/options", headers={"X-CSRFToken": token, **JSON})
    assert options.status_code == 200, options.get_data(as_text=True)[:300]
    return client.post(finish_url, data={"csrf_token": token, "name": name, "credential": key.create(options.get_json())})


def test_registering_the_first_factor_ends_other_sessions_and_lists_the_key(app):
    alice = create_user(app, ALICE)
    here, elsewhere = app.test_client(), app.test_client()
    password_sign_in(here, ALICE)
    password_sign_in(elsewhere, ALICE)
    response = register_through_pages(here, SoftKey())
    assert response.status_code == 303 and response.headers["Location"] == "/account/security"
    html, _ = page(here, "/account/security")
    assert "<td>Office key</td>" in html and "<td>Passkey</td>" in html and "never used" in html
    assert elsewhere.get("/account").status_code == 302
    ended = [s for s in sessions_of(app, alice) if s.ended_at is not None]
    assert [s.end_reason for s in ended] == ["second_factor_enabled"]
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.event == "factor_added")).all()
        assert [(e.user_id, e.details["method"]) for e in events] == [(alice, "webauthn")]


def test_removing_a_key_and_not_someone_elses(app):
    alice, bob = create_user(app, ALICE), create_user(app, BOB)
    enrol(app, alice, name="Mine")
    spare = enrol(app, alice, name="Spare")
    enrol(app, bob, name="Theirs")
    with app.app_context():
        ids = {c.name: c.id for c in db.session.scalars(select(WebAuthnCredential))}
    client = app.test_client()
    assert passkey_sign_in(client, spare).status_code == 303
    html, token = page(client, "/account/security")
    response = client.post(f"/account/security/passkeys/{ids['Theirs']}/delete", data={"csrf_token": token})
    assert response.status_code == 303
    assert "was not found" in client.get("/account/security").get_data(as_text=True)
    response = client.post(f"/account/security/passkeys/{ids['Mine']}/delete", data={"csrf_token": token})
    assert response.status_code == 303
    html, _ = page(client, "/account/security")
    assert "Mine" not in html and "Spare" in html
    with app.app_context():
        assert sorted(c.name for c in db.session.scalars(select(WebAuthnCredential))) == ["Spare", "Theirs"]
        removed = db.session.scalars(select(AuditEvent).where(AuditEvent.event == "factor_removed")).all()
        assert [e.details["credential_id"] for e in removed] == [ids["Mine"]]


def test_a_bad_registration_is_a_message_not_an_error_page(app):
    create_user(app, ALICE)
    client = app.test_client()
    password_sign_in(client, ALICE)
    _, token = page(client, "/account/security")
    for credential in ("", "garbage", '{"id": 1}'):
        client.post("/account/security/passkeys/options", headers={"X-CSRFToken": token, **JSON})
        response = client.post("/account/security/passkeys", data={"csrf_token": token, "name": "X",
                                                                  "credential": credential})
        assert response.status_code == 303
        assert "could not add" in client.get("/account/security").get_data(as_text=True)
    # Without options first the set-up has simply expired.
    client.post("/account/security/passkeys", data={"csrf_token": token, "credential": "{}"})
    assert "took too long" in client.get("/account/security").get_data(as_text=True)


def test_registering_needs_a_recent_sign_in(app):
    alice = create_user(app, ALICE)
    client = app.test_client()
    password_sign_in(client, ALICE)
    _, token = page(client, "/account/security")
    with app.app_context():
        for session in db.session.scalars(select(BrowserSession).where(BrowserSession.user_id == alice)):
            session.auth_time -= timedelta(hours=1)
        db.session.commit()
    response = client.post("/account/security/passkeys/options", headers={"X-CSRFToken": token, **JSON})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert "reauth=1" in response.headers["Location"]
