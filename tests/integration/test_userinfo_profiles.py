"""UserInfo answers from a copy of the profile in the shared store (idp.services.profiles): every
change to a user, made through any code path and on any instance, shows on the very next request."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update

from idp.extensions import db
from idp.services.profiles import EPOCH_KEY, profile_key, version_key
from idp.storage.models import User, utcnow
from tests.integration.mfa_support import services_of
from tests.support import PASSWORD, OIDCBrowser, bearer

EMAIL = "alice@example.com"


def _rp(app):
    with app.app_context():
        client, secret = services_of(app).clients.create(name="Alarm panel app", redirect_uris=["https://rp.example/cb"],
                                                         first_party=True)
        return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp.example/cb"}


def _access_token(app, rp) -> str:
    browser = OIDCBrowser(app.test_client())
    code = browser.login_and_get_code(rp, EMAIL, scope="openid profile email phone")["code"]
    return browser.exchange(rp, code).json["access_token"]


def _change(app, **values):
    with app.app_context():
        user = services_of(app).accounts.find_by_email(EMAIL)
        for name, value in values.items():
            setattr(user, name, value)
        db.session.commit()
        return user.id


@pytest.fixture
def setup(make_app):
    app = make_app()
    with app.app_context():
        services_of(app).accounts.create_user(EMAIL, PASSWORD, "Alice")
    rp = _rp(app)
    return app, rp, _access_token(app, rp)


def _userinfo(app, token):
    return app.test_client().get("/userinfo", headers=bearer(token))


def test_the_copy_is_used_and_any_change_shows_at_once(setup):
    app, rp, token = setup
    store = services_of(app).store
    _userinfo(app, token)  # the first answer ever also starts the epoch
    first = _userinfo(app, token).json
    assert first["name"] == "Alice"
    user_id = first["sub"]
    assert store.get(profile_key(user_id)) is not None  # the copy now exists …
    with app.app_context():  # … and is what answers: a row changed behind the ORM's back is not seen
        db.session.execute(text("UPDATE users SET name = 'Behind the back' WHERE id = :id"), {"id": user_id})
        db.session.commit()
    assert _userinfo(app, token).json["name"] == "Alice"

    _change(app, name="Alice Liddell", phone="+14155550100", phone_verified=True)
    changed = _userinfo(app, token).json
    assert changed["name"] == "Alice Liddell" and changed["phone_number"] == "+14155550100"
    assert changed["updated_at"] >= first["updated_at"]

    # A bulk UPDATE through the session changes every user's version.
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(email_verified=False))
        db.session.commit()
    assert _userinfo(app, token).json["email_verified"] is False

    # A change rolled back changes nothing, and is not seen.
    with app.app_context():
        user = db.session.get(User, user_id)
        user.name = "Never saved"
        db.session.flush()
        db.session.rollback()
    assert _userinfo(app, token).json["name"] == "Alice Liddell"


def test_a_locked_account_is_refused_at_once_even_with_a_copy(setup):
    app, rp, token = setup
    assert _userinfo(app, token).status_code == 200
    _change(app, locked_at=utcnow())  # without ending the sessions, to test the profile check alone
    refused = _userinfo(app, token)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    _change(app, locked_at=None)
    assert _userinfo(app, token).status_code == 200


def test_a_forgotten_version_means_the_copy_is_not_used(setup):
    app, rp, token = setup
    store = services_of(app).store
    user_id = _userinfo(app, token).json["sub"]
    with app.app_context():  # a change the store never heard of …
        db.session.execute(text("UPDATE users SET name = 'Renamed' WHERE id = :id"), {"id": user_id})
        db.session.commit()
    for forgotten in (version_key(user_id), EPOCH_KEY):  # … becomes visible once either version is lost
        store.delete(forgotten)
        assert _userinfo(app, token).json["name"] == "Renamed"
        assert store.get(forgotten) is not None  # started again for the next request


def test_a_change_on_one_instance_shows_on_the_other(make_app, backend):
    if backend != "postgres":
        pytest.skip("the in-process store serves one process only (SPEC §1)")
    first = make_app()
    second = make_app(redis_prefix=services_of(first).settings.redis_prefix)
    with first.app_context():
        services_of(first).accounts.create_user(EMAIL, PASSWORD, "Alice")
    rp = _rp(first)
    token = _access_token(first, rp)
    assert _userinfo(first, token).json["name"] == "Alice"
    _change(second, name="Alice on the second")
    assert _userinfo(first, token).json["name"] == "Alice on the second"
