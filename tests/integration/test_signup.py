"""Sign-up at /signup (SPEC §1 IDP_SIGNUP_ENABLED, §4 sign-up row, §6.10): codes to the email address
(and phone), the account created only once they verify, no account enumeration, one account per
email and per phone."""

from __future__ import annotations

import re
import time

from sqlalchemy import func, select

from idp.extensions import db
from idp.storage.models import User
from tests.integration.mfa_support import (
    EMAIL,
    UI_COOKIE,
    code_in_email,
    create_user,
    error_text,
    is_signed_in,
    new_browser,
    notice_text,
)
from tests.support import PASSWORD, csrf_from

NEW_PASSWORD = "a long new passphrase 42"
WRONG_CODE = "That code is not right. Check it and try again."
PHONE = "+14155550199"


def _start(browser, email: str = EMAIL, phone: str = "", password: str = NEW_PASSWORD):
    page = browser.get("/signup")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for field in ("email", "password", "phone"):
        assert f'<label for="{field}">' in html and f'name="{field}"' in html
    return browser.post("/signup", data={"csrf_token": csrf_from(html), "email": email, "phone": phone,
                                         "password": password})


def _verify(browser, email_code: str, sms_code: str | None = None):
    page = browser.get("/signup/verify")
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    data = {"csrf_token": csrf_from(html), "email_code": email_code}
    if sms_code is not None:
        data["sms_code"] = sms_code
    return browser.post("/signup/verify", data=data)


def _users(app, email: str = EMAIL) -> list[User]:
    with app.app_context():
        return [(u.id, u.email_verified, u.phone, u.phone_verified, u.password_hash)
                for u in db.session.scalars(select(User).where(User.email == email))]


def _user_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(User))


def _sms_code(receiver, index: int = -1) -> str:
    return re.match(r"(\d{6}) ", receiver.json_bodies()[index]["text"]).group(1)


def test_sign_up_is_off_unless_enabled(make_app):
    app = make_app()
    browser = new_browser(app)
    assert browser.get("/signup").status_code == 404
    assert browser.post("/signup", data={"email": EMAIL}).status_code in (400, 404)
    assert browser.get("/signup/verify").status_code == 404
    assert "Create an account" not in browser.get("/login").get_data(as_text=True)


def test_sign_up_with_an_email_code_creates_the_account_and_signs_in(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, signup_enabled=True)
    browser = new_browser(app)
    login_page = browser.get("/login").get_data(as_text=True)
    assert 'href="/signup"' in login_page and "Create an account" in login_page

    started = _start(browser, " Alice@Example.com ")
    assert started.status_code == 303 and started.headers["Location"] == "/signup/verify"
    verify_page = browser.get("/signup/verify").get_data(as_text=True)
    assert '<label for="email_code">' in verify_page and 'name="sms_code"' not in verify_page
    # Nothing is written until the code verifies; the pending sign-up keeps no plain password.
    assert _users(app) == []
    [message] = smtp_server.sink.wait_for(1, subject_contains="sign-up code")
    assert message["To"] == EMAIL
    code = code_in_email(smtp_server.sink, message)

    wrong = _verify(browser, "000000" if code != "000000" else "111111")
    assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE)
    assert _users(app) == []

    done = _verify(browser, code)
    assert done.status_code == 303 and done.headers["Location"] == "/account/security"
    [(user_id, email_verified, phone, _, password_hash)] = _users(app)
    assert email_verified and phone is None and password_hash and NEW_PASSWORD not in password_hash
    assert is_signed_in(browser)
    with app.app_context():
        [session] = app.extensions["idp"].sessions.active_for_user(user_id)
        assert list(session.amr) == ["pwd"]
        events = [e.event for e in app.extensions["idp"].audit.for_user(user_id)]
        assert "signed_up" in events and "sign_in" in events
    # The finished sign-up is gone: the verify page sends back to the start.
    again = browser.get("/signup/verify")
    assert again.status_code == 302 and "/signup?expired=1" in again.headers["Location"]
    # The new password signs in.
    other = new_browser(app)
    page = other.get("/login").get_data(as_text=True)
    signed = other.post("/login", data={"csrf_token": csrf_from(page), "next": "/account", "username": EMAIL,
                                        "password": NEW_PASSWORD})
    assert signed.status_code == 303 and is_signed_in(other)


def test_sign_up_with_a_phone_needs_the_sms_code_too(make_app, smtp_server, http_receiver):
    app = make_app(mail_url=smtp_server.url, sms_webhook_url=http_receiver.url("/sms"), signup_enabled=True)
    browser = new_browser(app)
    assert _start(browser, phone=PHONE).status_code == 303
    assert '<label for="sms_code">' in browser.get("/signup/verify").get_data(as_text=True)
    email_code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="sign-up code")[0])
    assert http_receiver.json_bodies()[0]["to"] == PHONE
    sms_code = _sms_code(http_receiver)

    # The email code is right and sticks; the SMS code is wrong.
    half = _verify(browser, email_code, "000000" if sms_code != "000000" else "111111")
    assert (half.status_code, error_text(half)) == (200, WRONG_CODE)
    assert "Email address confirmed." in half.get_data(as_text=True)
    assert _users(app) == []
    page = browser.get("/signup/verify").get_data(as_text=True)
    done = browser.post("/signup/verify", data={"csrf_token": csrf_from(page), "sms_code": sms_code})
    assert done.status_code == 303 and done.headers["Location"] == "/account/security"
    [(_, email_verified, phone, phone_verified, _)] = _users(app)
    assert (email_verified, phone, phone_verified) == (True, PHONE, True)


def test_a_registered_email_gets_the_same_pages_and_its_owner_is_told(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, signup_enabled=True, otp_resend_cooldown=1)
    owner_id = create_user(app)
    browser = new_browser(app)
    started = _start(browser)
    assert started.status_code == 303 and started.headers["Location"] == "/signup/verify"
    page = browser.get("/signup/verify")
    assert page.status_code == 200 and '<label for="email_code">' in page.get_data(as_text=True)
    [warning] = smtp_server.sink.wait_for(1, subject_contains="tried to sign up")
    assert warning["To"] == EMAIL
    assert not smtp_server.sink.wait_for(0, subject_contains="sign-up code")
    # Whatever code is tried, the step fails like a wrong code; no second account appears.
    for guess in ("123456", "654321"):
        failed = _verify(browser, guess)
        assert (failed.status_code, error_text(failed)) == (200, WRONG_CODE)
    assert [u[0] for u in _users(app)] == [owner_id] and _user_count(app) == 1
    # Resend behaves as for a new address (cooldown, then another message to the owner).
    time.sleep(1.1)
    page = browser.get("/signup/verify").get_data(as_text=True)
    resent = browser.post("/signup/resend", data={"csrf_token": csrf_from(page), "channel": "email"})
    assert resent.status_code == 200 and notice_text(resent) == "We sent a new code to your email address."
    smtp_server.sink.wait_for(2, subject_contains="tried to sign up")
    # The owner's password is unchanged.
    other = new_browser(app)
    login = other.get("/login").get_data(as_text=True)
    assert other.post("/login", data={"csrf_token": csrf_from(login), "next": "/account", "username": EMAIL,
                                      "password": PASSWORD}).status_code == 303


def test_a_phone_already_in_use_is_refused(make_app, smtp_server, http_receiver):
    app = make_app(mail_url=smtp_server.url, sms_webhook_url=http_receiver.url("/sms"), signup_enabled=True)
    create_user(app, email="bob@example.com", phone=PHONE)
    browser = new_browser(app)
    assert _start(browser, phone=PHONE).status_code == 303
    email_code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="sign-up code")[0])
    refused = _verify(browser, email_code, _sms_code(http_receiver))
    assert refused.status_code == 409
    assert "phone number is already used" in error_text(refused)
    assert _users(app) == [] and _user_count(app) == 1
    assert not is_signed_in(browser)


def test_bad_input_gives_the_form_again(make_app):
    app = make_app(signup_enabled=True)
    browser = new_browser(app)
    for email, phone, password, message in (
            ("not-an-email", "", NEW_PASSWORD, "Enter a valid email address."),
            (EMAIL, "12345", NEW_PASSWORD, "international format"),
            (EMAIL, "", "short", "at least 12")):
        response = _start(browser, email, phone, password)
        assert response.status_code == 200 and message in error_text(response)
    assert _user_count(app) == 0
    # A verify step without a started sign-up goes back to the start; resend too.
    assert browser.get("/signup/verify").status_code == 302
    page = browser.get("/signup").get_data(as_text=True)
    assert browser.post("/signup/verify", data={"csrf_token": csrf_from(page)}).status_code == 302
    assert browser.post("/signup/resend", data={"csrf_token": csrf_from(page), "channel": "x"}).status_code == 302


def test_an_expired_code_fails_and_resend_waits_for_the_cooldown(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, signup_enabled=True, otp_code_ttl=1, otp_resend_cooldown=2)
    browser = new_browser(app)
    assert _start(browser).status_code == 303
    code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="sign-up code")[0])
    page = browser.get("/signup/verify").get_data(as_text=True)
    early = browser.post("/signup/resend", data={"csrf_token": csrf_from(page), "channel": "email"})
    assert early.status_code == 429 and "A code was just sent" in error_text(early)
    assert early.headers["Retry-After"]
    time.sleep(1.3)
    expired = _verify(browser, code)
    assert (expired.status_code, error_text(expired)) == (200, WRONG_CODE)
    assert _users(app) == []
    time.sleep(1.0)
    page = browser.get("/signup/verify").get_data(as_text=True)
    resent = browser.post("/signup/resend", data={"csrf_token": csrf_from(page), "channel": "email"})
    assert resent.status_code == 200
    new_code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(2, subject_contains="sign-up code")[-1])
    done = _verify(browser, new_code)
    assert done.status_code == 303 and len(_users(app)) == 1


def test_the_pending_sign_up_is_bound_to_the_browser(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, signup_enabled=True)
    browser = new_browser(app)
    assert _start(browser).status_code == 303
    code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="sign-up code")[0])
    stranger = new_browser(app)
    assert stranger.get("/signup/verify").status_code == 302
    assert browser.get_cookie(UI_COOKIE) is not None
    assert _verify(browser, code).status_code == 303
