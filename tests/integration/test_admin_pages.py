"""The admin pages (/admin): find a person, see and end their sessions, reset their second factors,
lock and unlock, revoke tokens, register and edit relying apps.

Contract: SPEC §4 (/admin, CSRF on every form, a <label> for every input), §6.8 (an admin 2FA reset
removes factors and trusted devices and ends sessions), §6.9 (changes need a recent sign-in),
§6.11 (every admin action is audited), §6.12 (bad input: the form again, never a 500).
"""

from __future__ import annotations

import re
from html import unescape
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
import time_machine
from sqlalchemy import select

from idp.extensions import db
from idp.storage.models import AuditEvent, User
from tests.integration.mfa_support import (  # noqa: F401  (clock is a fixture)
    EMAIL,
    clock,
    create_rp,
    create_user,
    enrol_totp,
    error_text,
    ip,
    is_signed_in,
    new_browser,
    notice_text,
    password_step,
    services_of,
    sign_in_with_totp,
    submit_code,
    to_second_factor,
)
from tests.support import OIDCBrowser, basic_auth, csrf_from, introspect, query_of, refresh

ADMIN_EMAIL = "admin@example.com"
NOT_AN_ADMIN = "These pages are for administrators. Ask one if you need something changed."


# -- helpers ----------------------------------------------------------------------------------------


def _admin(app) -> tuple[object, str]:
    """A browser signed in (just now, with the password) as an administrator, and the admin's id."""
    admin_id = create_user(app, email=ADMIN_EMAIL, is_admin=True)
    browser = new_browser(app)
    assert password_step(browser, ADMIN_EMAIL).status_code == 303
    return browser, admin_id


def _page(browser, url: str) -> str:
    response = browser.get(url)
    assert response.status_code == 200, (url, response.status_code, response.headers.get("Location"))
    return response.get_data(as_text=True)


def _post(browser, url: str, data: dict | None = None, page: str = "/admin/tokens/revoke"):
    """POST a form the way the page would: with the CSRF token of this browser."""
    return browser.post(url, data={"csrf_token": csrf_from(_page(browser, page)), **(data or {})})


def _user(app, user_id: str) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


def _session_ids(app, user_id: str) -> dict[str, str]:
    """Open sessions of a user by IP."""
    with app.app_context():
        return {s.ip: s.id for s in services_of(app).sessions.active_for_user(user_id)}


def _events(app, event: str, **where) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.event == event)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        rows = list(db.session.scalars(query))
        for row in rows:
            db.session.expunge(row)
        return rows


def _client_form(**overrides) -> dict:
    form = {
        "name": "Monitoring station",
        "redirect_uris": "https://station.example/cb\r\nhttps://station.example/cb2",
        "post_logout_redirect_uris": "https://station.example/bye",
        "backchannel_logout_uri": "https://station.example/backchannel",
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "scope": "openid profile admin",
        "token_endpoint_auth_method": "",
        "id_token_signed_response_alg": "RS256",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def _machine_token(browser, client_id: str, secret: str):
    return browser.post("/token", data={"grant_type": "client_credentials"}, headers=basic_auth(client_id, secret))


def _create_machine_client(app) -> dict:
    with app.app_context():
        client, secret = services_of(app).clients.create(name="Alarm receiver", grant_types=["client_credentials"],
                                                         scope="admin")
        return {"client_id": client.client_id, "client_secret": secret}


def _user_tokens(app, rp: dict) -> dict:
    browser = OIDCBrowser(new_browser(app))
    result = browser.login_and_get_code(rp, EMAIL, scope="openid offline_access")
    response = browser.exchange(rp, result["code"])
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


class _FormFields(HTMLParser):
    """Every visible form control and every <label for>, to check that each control is labelled."""

    def __init__(self):
        super().__init__()
        self.controls: list[tuple[str, str | None]] = []
        self.labels: set[str] = set()
        self.inline: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            self.controls.append((attrs.get("name"), attrs.get("id")))
        if tag == "label" and attrs.get("for"):
            self.labels.add(attrs["for"])
        if tag in ("script", "style") or "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline.append(tag)


# -- who may come in -------------------------------------------------------------------------------


def test_a_signed_out_visitor_is_sent_to_sign_in(app):
    visitor = new_browser(app)
    for path in ("/admin", "/admin/users/some-id", "/admin/clients", "/admin/clients/new", "/admin/tokens/revoke"):
        response = visitor.get(path)
        assert response.status_code == 302, path
        location = response.headers["Location"]
        assert location.startswith("/login?") and query_of(location)["next"] == path, path


def test_a_person_who_is_not_an_admin_gets_a_friendly_403_and_changes_nothing(app):
    target = create_user(app, email="bob@example.com")
    create_user(app)
    alice = new_browser(app)
    assert password_step(alice).status_code == 303
    for path in ("/admin", f"/admin/users/{target}", "/admin/clients", "/admin/clients/new", "/admin/tokens/revoke"):
        response = alice.get(path)
        assert response.status_code == 403, path
        assert response.mimetype == "text/html"
        assert error_text(response) == NOT_AN_ADMIN, path
    csrf = csrf_from(alice.get("/account").get_data(as_text=True))
    refused = alice.post(f"/admin/users/{target}/lock", data={"csrf_token": csrf})
    assert refused.status_code == 403 and error_text(refused) == NOT_AN_ADMIN
    assert _user(app, target).locked_at is None
    refused = alice.post("/admin/clients/new", data={"csrf_token": csrf, **_client_form()})
    assert refused.status_code == 403
    with app.app_context():
        assert services_of(app).clients.list() == []


# -- finding and seeing a person -------------------------------------------------------------------


def test_admin_finds_a_user_and_sees_sessions_devices_factors_and_events(app, clock):
    alice_id = create_user(app, phone="+14155550100")
    phone = enrol_totp(app, alice_id, clock)
    laptop = new_browser(app)
    sign_in_with_totp(laptop, phone, trust_device="1", device_name="Alice laptop", **ip("198.51.100.7"))
    admin, _ = _admin(app)

    search = _page(admin, "/admin?email=" + quote("  Alice@Example.com "))
    assert f'href="/admin/users/{alice_id}"' in search
    missing = _page(admin, "/admin?email=nobody%40example.com")
    assert notice_text(admin.get("/admin?email=nobody%40example.com")) == "No account has the email nobody@example.com."
    assert "/admin/users/" not in missing

    page = _page(admin, f"/admin/users/{alice_id}")
    assert EMAIL in page and "+14155550100" in page and "Active" in page
    assert 'data-method="totp"' in page and "Authenticator app" in page
    assert "Alice laptop" in page and "198.51.100.7" in page
    [session_id] = _session_ids(app, alice_id).values()
    assert f'data-session-id="{session_id}"' in page
    assert f'action="/admin/users/{alice_id}/sessions/{session_id}/end"' in page
    assert 'data-event="sign_in"' in page
    for action in ("logout", "mfa/reset", "lock"):
        assert f'action="/admin/users/{alice_id}/{action}"' in page

    assert admin.get("/admin/users/no-such-id").status_code == 404


def test_every_admin_form_control_has_a_label_and_no_page_has_inline_script_or_style(app):
    alice_id = create_user(app)
    rp = create_rp(app)
    admin, _ = _admin(app)
    for path in ("/admin", f"/admin/users/{alice_id}", "/admin/clients", "/admin/clients/new",
                 f"/admin/clients/{rp['client_id']}", "/admin/tokens/revoke"):
        parser = _FormFields()
        parser.feed(_page(admin, path))
        for name, control_id in parser.controls:
            assert control_id and control_id in parser.labels, (path, name)
        assert parser.inline == [], path


# -- sessions, second factors, lock --------------------------------------------------------------------


def test_ending_one_session_signs_out_that_browser_only(app):
    alice_id = create_user(app)
    phone_browser, tablet = new_browser(app), new_browser(app)
    assert password_step(phone_browser, **ip("203.0.113.1")).status_code == 303
    assert password_step(tablet, **ip("203.0.113.2")).status_code == 303
    admin, admin_id = _admin(app)
    sessions = _session_ids(app, alice_id)

    ended = _post(admin, f"/admin/users/{alice_id}/sessions/{sessions['203.0.113.2']}/end")
    assert ended.status_code == 302 and ended.headers["Location"] == f"/admin/users/{alice_id}"
    assert notice_text(admin.get(ended.headers["Location"])) == "The session was ended and its apps signed out."
    assert not is_signed_in(tablet)
    assert is_signed_in(phone_browser)
    assert list(_session_ids(app, alice_id)) == ["203.0.113.1"]
    [event] = _events(app, "session_ended", session_id=sessions["203.0.113.2"])
    assert (event.actor_type, event.actor_id, event.details["reason"]) == ("admin", admin_id, "ended_by_admin")

    # A session of somebody else cannot be ended through this person's page.
    bob_id = create_user(app, email="bob@example.com")
    again = _post(admin, f"/admin/users/{bob_id}/sessions/{sessions['203.0.113.1']}/end")
    assert again.status_code == 302
    assert is_signed_in(phone_browser)


def test_log_out_everywhere_ends_every_session(app):
    alice_id = create_user(app)
    browsers = [new_browser(app), new_browser(app)]
    for browser in browsers:
        assert password_step(browser).status_code == 303
    admin, _ = _admin(app)
    done = _post(admin, f"/admin/users/{alice_id}/logout")
    assert done.status_code == 302
    assert notice_text(admin.get(done.headers["Location"])) == "2 session(s) were ended and their apps signed out."
    assert not any(is_signed_in(browser) for browser in browsers)
    assert is_signed_in(admin)


def test_reset_2fa_removes_totp_and_trusted_devices_and_ends_sessions(app, clock):
    alice_id = create_user(app)
    phone = enrol_totp(app, alice_id, clock)
    laptop = new_browser(app)
    sign_in_with_totp(laptop, phone, trust_device="1", device_name="Alice laptop")
    with app.app_context():
        svc = services_of(app)
        assert svc.factors.methods(db.session.get(User, alice_id)) == ["totp"]
        assert len(svc.devices.list(alice_id)) == 1
    admin, admin_id = _admin(app)

    done = _post(admin, f"/admin/users/{alice_id}/mfa/reset", page=f"/admin/users/{alice_id}")
    assert done.status_code == 302
    assert "1 method(s) removed, 1 trusted device(s) forgotten, 1 session(s) ended" in notice_text(
        admin.get(done.headers["Location"]))
    with app.app_context():
        svc = services_of(app)
        assert svc.factors.methods(db.session.get(User, alice_id)) == []
        assert svc.factors.totp_credentials(db.session.get(User, alice_id)) == []
        assert svc.devices.list(alice_id) == []
    assert not is_signed_in(laptop)
    [event] = _events(app, "mfa_reset", user_id=alice_id)
    assert (event.actor_type, event.actor_id, event.details["factors_removed"]) == ("admin", admin_id, ["totp"])
    page = _page(admin, f"/admin/users/{alice_id}")
    assert "Off: no second factor." in page and "No trusted devices." in page and "No open sessions." in page

    # The password alone now signs in: no factor is asked, trusted device or not.
    again = password_step(laptop)
    assert again.status_code == 303 and again.headers["Location"] != "/login/2fa"


def test_lock_then_unlock(app):
    alice_id = create_user(app)
    alice = new_browser(app)
    assert password_step(alice).status_code == 303
    admin, admin_id = _admin(app)

    locked = _post(admin, f"/admin/users/{alice_id}/lock")
    assert locked.status_code == 302
    assert notice_text(admin.get(locked.headers["Location"])) == "The account is locked; 1 session(s) were ended."
    assert _user(app, alice_id).locked_at is not None
    assert not is_signed_in(alice)
    assert password_step(new_browser(app)).status_code == 200, "a locked account cannot sign in"
    page = _page(admin, f"/admin/users/{alice_id}")
    assert "Locked since" in page and f'action="/admin/users/{alice_id}/unlock"' in page
    assert [e.actor_id for e in _events(app, "account_locked", user_id=alice_id)] == [admin_id]

    unlocked = _post(admin, f"/admin/users/{alice_id}/unlock")
    assert notice_text(admin.get(unlocked.headers["Location"])) == \
        "The account is unlocked; its owner can sign in again."
    assert _user(app, alice_id).locked_at is None
    assert password_step(alice).status_code == 303
    assert is_signed_in(alice)
    assert [e.actor_id for e in _events(app, "account_unlocked", user_id=alice_id)] == [admin_id]

    # Unlocking twice says so; an admin cannot lock themselves out.
    twice = _post(admin, f"/admin/users/{alice_id}/unlock")
    assert error_text(admin.get(twice.headers["Location"])) == "The account is not locked."
    self_lock = _post(admin, f"/admin/users/{admin_id}/lock")
    assert error_text(admin.get(self_lock.headers["Location"])) == "You cannot lock your own account."
    assert _user(app, admin_id).locked_at is None


# -- tokens -------------------------------------------------------------------------------------------


def test_revoking_an_access_token_makes_introspection_say_inactive(app):
    create_user(app)
    rp = create_rp(app)
    tokens = _user_tokens(app, rp)
    checker = new_browser(app)
    assert introspect(checker, rp, tokens["access_token"]).json["active"] is True
    admin, admin_id = _admin(app)

    done = _post(admin, "/admin/tokens/revoke", {"token": tokens["access_token"]}, page="/admin/tokens/revoke")
    assert done.status_code == 200
    assert notice_text(done) == "The token was revoked. A refresh token takes its whole grant with it."
    assert introspect(checker, rp, tokens["access_token"]).json["active"] is False
    [event] = _events(app, "token_revoked")
    assert (event.actor_type, event.actor_id, event.client_id) == ("admin", admin_id, rp["client_id"])

    # A refresh token takes its grant with it.
    assert _post(admin, "/admin/tokens/revoke", {"token": tokens["refresh_token"]}).status_code == 200
    assert refresh(checker, rp, tokens["refresh_token"]).status_code == 400

    unknown = _post(admin, "/admin/tokens/revoke", {"token": "not-a-token-of-ours"})
    assert unknown.status_code == 404
    assert error_text(unknown) == "No token issued here matches; it may have expired or been mistyped."
    empty = _post(admin, "/admin/tokens/revoke", {"token": "   "})
    assert empty.status_code == 400 and error_text(empty) == "Paste an access token or a refresh token."


# -- relying apps -----------------------------------------------------------------------------------------


def test_create_a_client_shows_the_secret_once_and_it_works_at_the_token_endpoint(app):
    admin, admin_id = _admin(app)
    page = _page(admin, "/admin/clients/new")
    assert 'id="grant_type-authorization_code" name="grant_types" type="checkbox" value="authorization_code"' in page

    created = _post(admin, "/admin/clients/new", _client_form(), page="/admin/clients/new")
    assert created.status_code == 200
    html = created.get_data(as_text=True)
    client_id = re.search(r'id="client-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="client-secret">([^<]+)<', html).group(1)
    assert len(secret) >= 40
    assert created.headers["Cache-Control"] == "no-store"

    token = _machine_token(admin, client_id, secret)
    assert token.status_code == 200, token.get_data(as_text=True)
    assert token.json["scope"] == "admin"

    listed = _page(admin, "/admin/clients")
    assert f'data-client-id="{client_id}"' in listed and "Monitoring station" in listed
    detail = _page(admin, f"/admin/clients/{client_id}")
    assert secret not in detail and secret not in listed, "the secret is shown once only"
    assert "https://station.example/cb\nhttps://station.example/cb2</textarea>" in detail
    with app.app_context():
        client = services_of(app).clients.get(client_id)
        assert client.redirect_uris == ["https://station.example/cb", "https://station.example/cb2"]
        assert client.post_logout_redirect_uris == ["https://station.example/bye"]
        assert client.backchannel_logout_uri == "https://station.example/backchannel"
        assert client.grant_types == ["authorization_code", "refresh_token", "client_credentials"]
        assert (client.scope, client.id_token_signed_response_alg) == ("openid profile admin", "RS256")
        assert client.token_endpoint_auth_method is None and not client.first_party
    [event] = _events(app, "client_created", client_id=client_id)
    assert (event.actor_type, event.actor_id) == ("admin", admin_id)


def test_a_public_client_gets_no_secret_and_bad_registrations_come_back_with_the_reason(app):
    admin, _ = _admin(app)
    public = _post(admin, "/admin/clients/new",
                   _client_form(public="1", name="Camera app", redirect_uris="com.example.camera:/cb",
                                grant_types=["authorization_code"], backchannel_logout_uri="", first_party="1"),
                   page="/admin/clients/new")
    assert public.status_code == 302
    detail = admin.get(public.headers["Location"])
    assert notice_text(detail).startswith("The public client was registered.")
    assert 'id="token_endpoint_auth_method"' not in detail.get_data(as_text=True)
    with app.app_context():
        [client] = services_of(app).clients.list()
        assert client.is_public and client.token_endpoint_auth_method == "none" and client.first_party

    for form, reason in [
        (_client_form(public="1"), "A public client cannot use client_credentials."),
        (_client_form(redirect_uris="http://station.example/cb"), "plain-http"),
        (_client_form(name="  "), "A client needs a name of 1 to 200 characters."),
        (_client_form(scope="openid everything"), "Unknown scope 'everything'"),
        (_client_form(backchannel_logout_uri="http://station.example/bc"), "https unless it is a loopback"),
        (_client_form(grant_types=["implicit"]), "Unsupported grant type 'implicit'"),
        (_client_form(token_endpoint_auth_method="private_key_jwt"), "Unsupported token endpoint auth method"),
        (_client_form(id_token_signed_response_alg="HS256"), "ES256 or RS256"),
    ]:
        refused = _post(admin, "/admin/clients/new", form, page="/admin/clients/new")
        assert refused.status_code == 400, reason
        assert reason in unescape(error_text(refused)), (reason, error_text(refused))
        assert 'name="csrf_token"' in refused.get_data(as_text=True), "the form comes back"
    with app.app_context():
        assert len(services_of(app).clients.list()) == 1, "nothing half-written"


def test_edit_redirect_uris_a_bad_uri_changes_nothing(app):
    rp = create_rp(app)
    admin, admin_id = _admin(app)
    path = f"/admin/clients/{rp['client_id']}"
    page = _page(admin, path)
    assert 'id="public"' not in page, "public/confidential is fixed at registration"

    bad = _post(admin, path, _client_form(name="Renamed", redirect_uris="https://rp.example/cb\nhttp://evil.example/cb",
                                          grant_types=["authorization_code", "refresh_token"]), page=path)
    assert bad.status_code == 400
    assert "plain-http" in error_text(bad)
    assert "http://evil.example/cb" in bad.get_data(as_text=True), "the form keeps what was typed"
    with app.app_context():
        client = services_of(app).clients.get(rp["client_id"])
        assert (client.name, client.redirect_uris) == ("Alarm panel app", ["https://rp.example/cb"])
    assert _events(app, "client_updated") == []

    unticked = _post(admin, path, _client_form(grant_types=None), page=path)
    assert unticked.status_code == 400 and "Choose at least one grant type" in error_text(unticked)

    good = _post(admin, path, _client_form(name="Alarm panel app", redirect_uris="https://rp.example/new",
                                           grant_types=["authorization_code", "refresh_token"],
                                           scope="openid profile email phone offline_access",
                                           post_logout_redirect_uris="", backchannel_logout_uri="",
                                           id_token_signed_response_alg="ES256", first_party="1"), page=path)
    assert good.status_code == 302 and good.headers["Location"] == path
    assert notice_text(admin.get(path)) == "Saved: redirect uris."
    with app.app_context():
        client = services_of(app).clients.get(rp["client_id"])
        assert client.redirect_uris == ["https://rp.example/new"]
        assert client.name == "Alarm panel app" and client.first_party
    [event] = _events(app, "client_updated", client_id=rp["client_id"])
    assert event.actor_id == admin_id
    assert event.details["changes"] == {"redirect_uris": [["https://rp.example/cb"], ["https://rp.example/new"]]}


def test_a_new_secret_replaces_the_old_one_at_once(app):
    machine = _create_machine_client(app)
    admin, admin_id = _admin(app)
    assert _machine_token(admin, machine["client_id"], machine["client_secret"]).status_code == 200

    path = f"/admin/clients/{machine['client_id']}"
    rotated = _post(admin, f"{path}/secret", page=path)
    assert rotated.status_code == 200
    new_secret = re.search(r'id="client-secret">([^<]+)<', rotated.get_data(as_text=True)).group(1)
    assert new_secret != machine["client_secret"]
    assert _machine_token(admin, machine["client_id"], machine["client_secret"]).status_code == 401
    assert _machine_token(admin, machine["client_id"], new_secret).status_code == 200
    assert [e.actor_id for e in _events(app, "client_secret_rotated", client_id=machine["client_id"])] == [admin_id]

    # A public client has no secret to replace.
    with app.app_context():
        public, _ = services_of(app).clients.create(name="Camera", redirect_uris=["com.example.cam:/cb"], public=True)
        public_id = public.client_id
    refused = _post(admin, f"/admin/clients/{public_id}/secret")
    assert error_text(admin.get(refused.headers["Location"])) == "A public client has no secret."


def test_deleting_a_client_ends_its_secret_and_its_tokens(app):
    machine = _create_machine_client(app)
    admin, admin_id = _admin(app)
    token = _machine_token(admin, machine["client_id"], machine["client_secret"]).json["access_token"]
    assert introspect(admin, machine, token).json["active"] is True

    deleted = _post(admin, f"/admin/clients/{machine['client_id']}/delete")
    assert deleted.status_code == 302 and deleted.headers["Location"] == "/admin/clients"
    listed = admin.get("/admin/clients")
    assert unescape(notice_text(listed)) == "The client 'Alarm receiver' was deleted; its tokens no longer work."
    assert machine["client_id"] not in listed.get_data(as_text=True)
    assert _machine_token(admin, machine["client_id"], machine["client_secret"]).status_code == 401
    with app.app_context():
        assert services_of(app).grants.active_access_token(token) is None, "its tokens went with it"
    assert admin.get(f"/admin/clients/{machine['client_id']}").status_code == 404
    [event] = _events(app, "client_deleted", client_id=machine["client_id"])
    assert (event.actor_id, event.details["name"]) == (admin_id, "Alarm receiver")


# -- CSRF and re-authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("action", ["lock", "logout", "mfa/reset"])
def test_a_post_without_the_csrf_token_is_refused(app, action):
    alice_id = create_user(app)
    alice = new_browser(app)
    assert password_step(alice).status_code == 303
    admin, _ = _admin(app)
    refused = admin.post(f"/admin/users/{alice_id}/{action}")
    assert refused.status_code == 400
    assert _user(app, alice_id).locked_at is None
    assert is_signed_in(alice)
    assert admin.post("/admin/clients/new", data=_client_form()).status_code == 400
    assert admin.post("/admin/tokens/revoke", data={"token": "x", "csrf_token": "forged"}).status_code == 400
    with app.app_context():
        assert services_of(app).clients.list() == []


def _later(seconds: int):
    return time_machine.travel(datetime.now(timezone.utc) + timedelta(seconds=seconds), tick=True)


def test_a_stale_sign_in_must_reauthenticate_before_acting_and_comes_back_to_the_page(app):
    alice_id = create_user(app)
    admin, _ = _admin(app)
    user_page = f"/admin/users/{alice_id}"
    csrf = csrf_from(_page(admin, user_page))
    with _later(app.extensions["idp"].settings.reauth_max_age + 30):
        assert admin.get(user_page).status_code == 200, "looking needs no fresh sign-in"
        stale = admin.post(f"{user_page}/lock", data={"csrf_token": csrf})
        assert stale.status_code == 302
        location = stale.headers["Location"]
        assert location.startswith("/login?") and query_of(location)["reauth"] == "1"
        assert query_of(location)["next"] == user_page
        assert _user(app, alice_id).locked_at is None

        stale_client = admin.post("/admin/clients/new", data={"csrf_token": csrf, **_client_form()})
        assert query_of(stale_client.headers["Location"])["next"] == "/admin/clients/new"
        with app.app_context():
            assert services_of(app).clients.list() == []

        again = password_step(admin, ADMIN_EMAIL, next_url=user_page)
        assert again.status_code == 303 and again.headers["Location"] == user_page
        done = _post(admin, f"{user_page}/lock", page=user_page)
        assert done.status_code == 302 and done.headers["Location"] == user_page
        assert _user(app, alice_id).locked_at is not None


def test_an_admin_with_a_second_factor_proves_it_again_after_a_trusted_device_sign_in(app, clock):
    """C19: a trusted browser skips the factor at sign-in, but admin changes need a sign-in that used it."""
    alice_id = create_user(app)
    admin_id = create_user(app, email=ADMIN_EMAIL, is_admin=True)
    phone = enrol_totp(app, admin_id, clock)
    admin = new_browser(app)
    to_second_factor(admin, ADMIN_EMAIL)
    assert submit_code(admin, phone.next_code(), trust_device="1", device_name="Desk").status_code == 303
    csrf = csrf_from(_page(admin, "/admin/tokens/revoke"))
    admin.post("/logout/confirm", data={"csrf_token": csrf})
    skipped = password_step(admin, ADMIN_EMAIL)
    assert skipped.status_code == 303 and skipped.headers["Location"] != "/login/2fa"

    csrf = csrf_from(_page(admin, f"/admin/users/{alice_id}"))
    asked = admin.post(f"/admin/users/{alice_id}/lock", data={"csrf_token": csrf})
    assert asked.status_code == 302 and "reauth=1" in asked.headers["Location"]
    assert _user(app, alice_id).locked_at is None


def test_logout_deliveries_page_shows_each_app_told_and_each_still_retried(app, http_receiver):
    app.config["IDP_DELIVER_LOGOUTS_IMMEDIATELY"] = False
    alice_id = create_user(app)
    with app.app_context():
        client, secret = app.extensions["idp"].clients.create(
            name="Camera app", redirect_uris=["https://rp.example/cb"], first_party=True,
            backchannel_logout_uri=http_receiver.url("/bcl"))
        rp = {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp.example/cb"}
    camera = OIDCBrowser(new_browser(app))
    assert camera.exchange(rp, camera.login_and_get_code(rp, EMAIL)["code"]).status_code == 200
    admin, _ = _admin(app)
    [session_id] = _session_ids(app, alice_id).values()
    assert _post(admin, f"/admin/users/{alice_id}/logout").status_code == 302

    page = _page(admin, "/admin/logout-deliveries?status=pending")
    assert "Camera app" in page and session_id[:8] in page and 'data-status="pending"' in page
    http_receiver.status = 503
    with app.app_context():
        from idp.notify.delivery import LogoutDeliverer

        LogoutDeliverer().deliver_due()
    page = _page(admin, "/admin/logout-deliveries")
    assert "HTTP 503" in page and 'data-status="pending"' in page
    assert _page(admin, "/admin/logout-deliveries?status=delivered").count("data-status=") == 0

    outsider = new_browser(app)
    create_user(app, email="carol@example.com")
    assert password_step(outsider, "carol@example.com").status_code == 303
    assert outsider.get("/admin/logout-deliveries").status_code == 403
