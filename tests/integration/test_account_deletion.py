"""Account deletion (SPEC §4, §6.10): a fresh sign-in, an email code (and an SMS code when a verified
phone is on file), a confirm button; every session ends first (relying apps get a back-channel logout
token), tokens die, the user row goes, the audit trail keeps a tombstone. Admins delete by page and API;
the last administrator cannot delete itself."""

from __future__ import annotations

import re

from idp.extensions import db
from idp.storage.models import AuditEvent, User
from tests.integration.mfa_support import (
    EMAIL,
    GENERIC_FAILURE,
    code_in_email,
    create_user,
    error_text,
    notice_text,
    password_step,
)
from tests.integration.session_support import (
    IPHONE_SAFARI,
    Api,
    admin_client,
    assert_error,
    assert_tokens_alive,
    assert_tokens_dead,
    browser_for,
    code_flow,
    logout_token_of,
    register_client,
    verify_logout_token,
    wait_for_posts,
)
from tests.support import csrf_from

LAST_ADMIN = ("This is the only administrator account, so it cannot be deleted. "
              "Make someone else an administrator first.")


def backchannel_posts(receiver):
    return [r for r in receiver.requests if r["path"] == "/backchannel"]


def wait_for_logout(receiver, count: int = 1):
    wait_for_posts(receiver, len(receiver.requests) - len(backchannel_posts(receiver)) + count)
    return backchannel_posts(receiver)


def user_exists(app, user_id: str) -> bool:
    with app.app_context():
        return db.session.get(User, user_id) is not None


def tombstone(app, user_id: str) -> dict:
    with app.app_context():
        [event] = db.session.scalars(db.select(AuditEvent).where(AuditEvent.user_id == user_id,
                                                                 AuditEvent.event == "account_deleted")).all()
        return {"actor_type": event.actor_type, "actor_id": event.actor_id, "details": event.details}


def assert_gone(app, rp, tokens, user_id, receiver, actor_type, actor_id):
    [post] = wait_for_logout(receiver)
    verify_logout_token(app, logout_token_of(post), rp["client_id"], tokens["sid"], user_id)
    assert_tokens_dead(app, rp, tokens)
    assert not user_exists(app, user_id)
    stone = tombstone(app, user_id)
    assert (stone["actor_type"], stone["actor_id"]) == (actor_type, actor_id)
    assert EMAIL not in repr(stone["details"]) and re.fullmatch(r"[0-9a-f]{64}|[A-Za-z0-9_-]{40,}",
                                                                 stone["details"]["email_hash"])
    failed = password_step(browser_for(app, address="198.51.100.99"))
    assert error_text(failed) == GENERIC_FAILURE


def page_csrf(browser, path: str) -> tuple[str, str]:
    page = browser.get(path)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    html = page.get_data(as_text=True)
    return html, csrf_from(html)


def step(browser, path: str, csrf: str, back: str = "/account/delete", **form):
    response = browser.post(path, data={"csrf_token": csrf, **form})
    assert response.status_code == 302 and response.headers["Location"] == back, (
        response.status_code, response.get_data(as_text=True)[:300])
    return browser.get(back)


def test_deletion_with_email_and_sms_codes_ends_everything(make_app, smtp_server, http_receiver):
    app = make_app(mail_url=smtp_server.url, sms_webhook_url=http_receiver.url("/sms"))
    user_id = create_user(app, phone="+14155550100")
    rp = register_client(app, backchannel_logout_uri=http_receiver.url("/backchannel"))
    browser = browser_for(app)
    tokens = code_flow(browser, rp)
    assert_tokens_alive(app, rp, tokens)

    html, csrf = page_csrf(browser, "/account/delete")
    assert "Send the codes" in html
    page = step(browser, "/account/delete/start", csrf)
    assert notice_text(page) == "We sent a code to your email address and one to your phone."
    html = page.get_data(as_text=True)
    assert '<label for="email_code">' in html and '<label for="sms_code">' in html
    [mail] = smtp_server.sink.wait_for(1, subject_contains="account deletion code")
    assert mail["To"] == EMAIL
    email_code = code_in_email(smtp_server.sink, mail)
    [sms] = [b for b in http_receiver.json_bodies() if "to" in b]
    assert sms["to"] == "+14155550100"
    sms_code = re.match(r"(\d{6}) is your idp account deletion code", sms["text"]).group(1)

    # A wrong SMS code: the email code counts, the SMS one is asked again.
    page = step(browser, "/account/delete/verify", csrf, email_code=email_code,
                sms_code=f"{(int(sms_code) + 1) % 1_000_000:06d}")
    assert error_text(page).startswith("That code is not right")
    html = page.get_data(as_text=True)
    assert 'name="email_code"' not in html and 'name="sms_code"' in html
    page = step(browser, "/account/delete/confirm", csrf)
    assert error_text(page) == "Enter the codes first." and user_exists(app, user_id)

    page = step(browser, "/account/delete/verify", csrf, sms_code=sms_code)
    assert "Delete my account" in page.get_data(as_text=True)
    assert user_exists(app, user_id)

    deleted = browser.post("/account/delete/confirm", data={"csrf_token": csrf})
    assert deleted.status_code == 200 and 'id="account-deleted"' in deleted.get_data(as_text=True)
    assert any(h.startswith("idp_session=;") for h in deleted.headers.getlist("Set-Cookie"))
    assert browser.get("/account").status_code == 302
    assert_gone(app, rp, tokens, user_id, http_receiver, "user", user_id)


def test_deletion_with_only_an_email_code_and_bad_input(make_app, smtp_server, http_receiver):
    app = make_app(mail_url=smtp_server.url)
    user_id = create_user(app)
    rp = register_client(app, backchannel_logout_uri=http_receiver.url("/backchannel"))
    browser = browser_for(app)
    tokens = code_flow(browser, rp)
    _, csrf = page_csrf(browser, "/account/delete")
    page = step(browser, "/account/delete/confirm", csrf)
    assert error_text(page) == "Enter the codes first." and user_exists(app, user_id)
    page = step(browser, "/account/delete/verify", csrf, email_code="12")
    assert error_text(page) == "There is no deletion in progress, or it ran out. Start again."

    page = step(browser, "/account/delete/start", csrf)
    assert 'name="sms_code"' not in page.get_data(as_text=True)
    page = step(browser, "/account/delete/verify", csrf, email_code="not a code")
    assert error_text(page).startswith("That code is not right")
    code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="deletion code")[0])
    page = step(browser, "/account/delete/verify", csrf, email_code=code)
    assert "Delete my account" in page.get_data(as_text=True)
    assert browser.post("/account/delete/confirm", data={"csrf_token": csrf}).status_code == 200
    assert_gone(app, rp, tokens, user_id, http_receiver, "user", user_id)


def test_an_admin_deletes_an_account_from_its_page(make_app, http_receiver):
    app = make_app()
    user_id = create_user(app)
    root_id = create_user(app, "root@example.com", is_admin=True)
    rp = register_client(app, backchannel_logout_uri=http_receiver.url("/backchannel"))
    tokens = code_flow(browser_for(app, IPHONE_SAFARI, "198.51.100.7"), rp)
    admin = browser_for(app, address="192.0.2.50")
    assert password_step(admin, "root@example.com").status_code == 303
    html, csrf = page_csrf(admin, f"/admin/users/{user_id}")
    assert 'id="delete-account"' in html
    page = step(admin, f"/admin/users/{user_id}/delete", csrf, back="/admin")
    assert notice_text(page) == "The account was deleted; its sessions were ended and their apps signed out."
    assert_gone(app, rp, tokens, user_id, http_receiver, "admin", root_id)
    assert admin.get(f"/admin/users/{user_id}").status_code == 404


def test_an_admin_deletes_an_account_through_the_api(make_app, http_receiver):
    app = make_app()
    user_id = create_user(app)
    rp = register_client(app, backchannel_logout_uri=http_receiver.url("/backchannel"))
    tokens = code_flow(browser_for(app), rp)
    machine = admin_client(app)
    api = Api(app)
    response = api.delete(f"/api/admin/users/{user_id}", machine["token"])
    assert response.status_code == 204 and response.get_data() == b""
    assert_gone(app, rp, tokens, user_id, http_receiver, "client", machine["client_id"])
    assert_error(api.delete(f"/api/admin/users/{user_id}", machine["token"]), 404, "not_found")
    assert_error(api.delete(f"/api/admin/users/{user_id}", tokens["access_token"]), 401, "invalid_token")


def test_the_last_admin_cannot_delete_itself(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    root_id = create_user(app, "root@example.com", is_admin=True)
    console = register_client(app, "Admin console", scope="openid admin", redirect_uri="https://console.example/cb")
    token = code_flow(browser_for(app, address="192.0.2.51"), console, "root@example.com")["access_token"]
    api = Api(app)
    assert_error(api.delete(f"/api/admin/users/{root_id}", token), 409, "conflict", LAST_ADMIN)

    admin = browser_for(app, address="192.0.2.50")
    assert password_step(admin, "root@example.com").status_code == 303
    _, csrf = page_csrf(admin, f"/admin/users/{root_id}")
    page = step(admin, f"/admin/users/{root_id}/delete", csrf, back=f"/admin/users/{root_id}")
    assert error_text(page) == LAST_ADMIN
    html = admin.get("/account/delete").get_data(as_text=True)
    assert LAST_ADMIN in html and "Send the codes" not in html
    page = step(admin, "/account/delete/start", csrf)
    assert error_text(page) == LAST_ADMIN
    assert user_exists(app, root_id)

    # With a second administrator, the first may go (and sees the deleted page).
    create_user(app, "second@example.com", is_admin=True)
    deleted = admin.post(f"/admin/users/{root_id}/delete", data={"csrf_token": csrf})
    assert deleted.status_code == 200 and 'id="account-deleted"' in deleted.get_data(as_text=True)
    assert not user_exists(app, root_id)
