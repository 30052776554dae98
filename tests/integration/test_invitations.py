"""Invitations (SPEC §6.10): an admin invites by email from /admin/invitations or the API; the single-use,
expiring link sets the password and signs in with amr ["pwd", "email"]."""

from __future__ import annotations

import re

import time_machine
from sqlalchemy import select

from idp.extensions import db
from idp.storage.models import User
from tests.integration.mfa_support import create_user, error_text, is_signed_in, new_browser, password_step
from tests.integration.session_support import Api, admin_client, assert_error, browser_for, code_flow, \
    register_client
from tests.support import csrf_from

ADMIN_EMAIL = "admin@example.com"
INVITEE = "carol@example.com"
NEW_PASSWORD = "a long new passphrase 42"
NOBODY = "00000000-0000-4000-8000-000000000000"


def _link(sink, count: int) -> str:
    message = sink.wait_for(count, subject_contains="invited")[count - 1]
    assert message["To"] == INVITEE
    return re.search(r"http://localhost:5000(/invite/[A-Za-z0-9_-]{32,})", sink.text_of(message)).group(1)


def _admin(app):
    create_user(app, email=ADMIN_EMAIL, is_admin=True)
    browser = new_browser(app)
    assert password_step(browser, ADMIN_EMAIL).status_code == 303
    return browser


def _accept(browser, path: str, password: str = NEW_PASSWORD):
    page = browser.get(path)
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    assert '<label for="password">' in html
    return browser.post(path, data={"csrf_token": csrf_from(html), "password": password})


def _user(app, email: str = INVITEE):
    with app.app_context():
        u = db.session.scalar(select(User).where(User.email == email))
        return None if u is None else {"id": u.id, "email_verified": u.email_verified, "is_admin": u.is_admin,
                                       "name": u.name, "has_password": u.password_hash is not None}


def _post(browser, url: str, **data):
    html = browser.get("/admin/invitations").get_data(as_text=True)
    return browser.post(url, data={"csrf_token": csrf_from(html), **data})


def _rows(browser) -> list[str]:
    return re.findall(r'data-invitation-id="([^"]+)"', browser.get("/admin/invitations").get_data(as_text=True))


def test_admin_page_invites_and_the_link_sets_the_password_once(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    admin = _admin(app)
    page = admin.get("/admin/invitations").get_data(as_text=True)
    for field in ("email", "name", "admin"):
        assert f'<label for="{field}">' in page
    sent = _post(admin, "/admin/invitations", email=INVITEE, name="Carol", admin="1")
    assert sent.status_code == 303
    [invitation_id] = _rows(admin)
    path = _link(smtp_server.sink, 1)
    # Inviting the same address again is refused while the first is pending; bad input shows the form.
    again = _post(admin, "/admin/invitations", email=INVITEE)
    assert again.status_code == 409 and "pending invitation" in error_text(again)
    bad = _post(admin, "/admin/invitations", email="nope")
    assert bad.status_code == 400 and error_text(bad) == "Enter a valid email address."

    invitee = new_browser(app)
    weak = _accept(invitee, path, "short")
    assert weak.status_code == 200 and "at least 12" in error_text(weak)
    assert _user(app) is None
    done = _accept(invitee, path)
    assert done.status_code == 303 and done.headers["Location"] == "/account/security"
    assert _user(app) == {"id": _user(app)["id"], "email_verified": True, "is_admin": True, "name": "Carol",
                          "has_password": True}
    assert is_signed_in(invitee)
    with app.app_context():
        [session] = app.extensions["idp"].sessions.active_for_user(_user(app)["id"])
        assert list(session.amr) == ["pwd", "email"] and session.acr == "urn:idp:acr:2step"
    # Single use: the link now gives the friendly page, on GET and POST.
    used = new_browser(app).get(path)
    assert used.status_code == 410 and "already used" in used.get_data(as_text=True)
    assert _accept_post(new_browser(app), path).status_code == 410
    assert _rows(admin) == []
    assert invitation_id
    # Password sign-in works.
    assert password_step(new_browser(app), INVITEE, NEW_PASSWORD).status_code == 303


def _accept_post(browser, path):
    html = browser.get("/login").get_data(as_text=True)
    return browser.post(path, data={"csrf_token": csrf_from(html), "password": NEW_PASSWORD})


def test_resend_replaces_the_link_and_cancel_kills_it(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    admin = _admin(app)
    assert _post(admin, "/admin/invitations", email=INVITEE).status_code == 303
    first = _link(smtp_server.sink, 1)
    [invitation_id] = _rows(admin)
    assert _post(admin, f"/admin/invitations/{invitation_id}/resend").status_code == 303
    second = _link(smtp_server.sink, 2)
    assert first != second
    assert new_browser(app).get(first).status_code == 410
    assert new_browser(app).get(second).status_code == 200
    assert _post(admin, f"/admin/invitations/{invitation_id}/cancel").status_code == 303
    assert new_browser(app).get(second).status_code == 410
    assert _rows(admin) == []
    assert _post(admin, f"/admin/invitations/{NOBODY}/cancel").status_code == 303
    assert _user(app) is None


def test_an_expired_link_gives_the_friendly_page(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    admin = _admin(app)
    assert _post(admin, "/admin/invitations", email=INVITEE).status_code == 303
    path = _link(smtp_server.sink, 1)
    with time_machine.travel(8 * 24 * 3600 + __import__("time").time(), tick=False):
        expired = new_browser(app).get(path)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    assert new_browser(app).get("/invite/not-a-token").status_code == 410


def test_non_admins_get_403(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    create_user(app)
    alice = new_browser(app)
    assert password_step(alice).status_code == 303
    assert alice.get("/admin/invitations").status_code == 403
    html = alice.get("/account").get_data(as_text=True)
    assert alice.post("/admin/invitations", data={"csrf_token": csrf_from(html), "email": INVITEE}).status_code == 403


def test_api_invites_lists_and_cancels_as_documented(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    admin = admin_client(app)
    api = Api(app)
    token = admin["token"]
    created = api.post("/api/admin/invitations", token, json={"email": INVITEE, "name": "Carol"})
    assert created.status_code == 201
    body = created.json
    assert (body["email"], body["name"], body["is_admin"], body["status"], body["invited_by"]) == (
        INVITEE, "Carol", False, "pending", admin["client_id"])
    assert api.get("/api/admin/invitations", token).json == {"invitations": [body]}
    assert_error(api.post("/api/admin/invitations", token, json={"email": INVITEE}), 409, "conflict")
    for bad in ({"email": "nope"}, {"email": 5}, {"email": INVITEE, "admin": "yes"}):
        assert_error(api.post("/api/admin/invitations", token, json=bad), 400, "invalid_request")
    assert_error(api.post("/api/admin/invitations", token, data="x", content_type="application/json"), 400,
                 "invalid_request")
    path = _link(smtp_server.sink, 1)

    # The link signs in with amr ["pwd", "email"], also in the ID token of a relying app.
    rp = register_client(app)
    invitee = browser_for(app)
    assert _accept(invitee, path).status_code == 303
    tokens = code_flow(invitee, rp, INVITEE)
    from tests.support import jwt_payload
    claims = jwt_payload(tokens["id_token"])
    assert claims["amr"] == ["pwd", "email"] and claims["acr"] == "urn:idp:acr:2step"
    assert api.get("/api/admin/invitations", token).json == {"invitations": []}
    assert_error(api.post("/api/admin/invitations", token, json={"email": INVITEE}), 409, "conflict")

    other = api.post("/api/admin/invitations", token, json={"email": "dave@example.com", "admin": True}).json
    assert other["is_admin"] is True
    assert api.delete(f"/api/admin/invitations/{other['id']}", token).status_code == 204
    assert_error(api.delete(f"/api/admin/invitations/{other['id']}", token), 409, "conflict")
    assert_error(api.delete(f"/api/admin/invitations/{NOBODY}", token), 404, "not_found")
    # A person without admin rights is refused.
    create_user(app, email="eve@example.com")
    console = register_client(app, "Admin console", scope="openid admin")
    eve = code_flow(browser_for(app), console, "eve@example.com")
    assert_error(api.get("/api/admin/invitations", eve["access_token"]), 403, "insufficient_scope")
