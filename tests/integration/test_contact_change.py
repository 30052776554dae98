"""Email and phone changes on /account/contact (SPEC §6.9): a fresh sign-in, a code to the NEW address
or number, the old one told, one sensitive change at a time. Real SMTP server and SMS receiver."""

from __future__ import annotations

import re
import time

from idp.extensions import db
from idp.storage.models import AuditEvent
from tests.integration.mfa_support import (
    EMAIL,
    code_in_email,
    create_user,
    error_text,
    load_user,
    new_browser,
    notice_text,
    password_step,
)
from tests.support import csrf_from

WRONG_CODE = "That code is not right, or it has expired. Check it and try again, or send a new one."
ONE_AT_A_TIME = ("Another change to your account is in progress. Finish or cancel it first, "
                 "or wait 15 minutes for it to run out.")
NEW_EMAIL = "alice.new@example.com"


def signed_in(app, email: str = EMAIL):
    browser = new_browser(app)
    assert password_step(browser, email).status_code == 303
    page = browser.get("/account/contact")
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    return browser, csrf_from(page.get_data(as_text=True))


def post(browser, path: str, csrf: str, **form):
    response = browser.post(path, data={"csrf_token": csrf, **form})
    assert response.status_code == 302 and response.headers["Location"] == "/account/contact", (
        response.status_code, response.get_data(as_text=True)[:300])
    return browser.get("/account/contact")


def user_row(app, user_id):
    with app.app_context():
        user = load_user(app, user_id)
        return {"email": user.email, "email_verified": user.email_verified, "phone": user.phone,
                "phone_verified": user.phone_verified, "sms_otp_enabled": user.sms_otp_enabled}


def events(app, user_id):
    with app.app_context():
        return [e.event for e in db.session.scalars(db.select(AuditEvent).where(AuditEvent.user_id == user_id))]


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_email_change_is_confirmed_by_a_code_to_the_new_address_and_the_old_one_is_told(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    user_id = create_user(app)
    sink = smtp_server.sink
    browser, csrf = signed_in(app)
    page = browser.get("/account/contact").get_data(as_text=True)
    for field in ("new-email", "new-phone"):
        assert f'<label for="{field}">' in page

    page = post(browser, "/account/contact/email", csrf, email="  Alice.NEW@Example.com ")
    assert notice_text(page) == "We sent a 6-digit code to your new address. Enter it to finish the change."
    [message] = sink.wait_for(1, subject_contains="email change code")
    assert message["To"] == NEW_EMAIL
    code = code_in_email(sink, message)
    assert user_row(app, user_id)["email"] == EMAIL, "nothing changes before the code"

    page = post(browser, "/account/contact/verify", csrf, code=other_code(code))
    assert error_text(page) == WRONG_CODE
    page = post(browser, "/account/contact/verify", csrf, code=code)
    assert notice_text(page) == "Your email address was changed."
    assert user_row(app, user_id)["email"] == NEW_EMAIL and user_row(app, user_id)["email_verified"]

    [told] = sink.wait_for(1, subject_contains="email address was changed")
    assert told["To"] == EMAIL
    assert NEW_EMAIL in sink.text_of(told)
    assert {"email_change_started", "email_changed", "code_failed"} <= set(events(app, user_id))

    # The new address signs in; the old one no longer does.
    assert password_step(new_browser(app), NEW_EMAIL).status_code == 303
    assert password_step(new_browser(app), EMAIL).status_code != 303


def test_a_taken_address_is_refused_without_saying_whose(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    user_id = create_user(app)
    create_user(app, "bob@example.com")
    browser, csrf = signed_in(app)
    page = post(browser, "/account/contact/email", csrf, email="BOB@example.com")
    assert error_text(page) == "That email address cannot be used. Choose another one."
    assert "bob" not in (error_text(page) or "").lower()
    page = post(browser, "/account/contact/email", csrf, email="not an address")
    assert error_text(page) == "Enter a valid email address."
    time.sleep(0.3)
    assert [m for m in smtp_server.sink.messages if "code" in m["Subject"]] == []
    assert user_row(app, user_id)["email"] == EMAIL
    # Nothing is left pending: another change may start.
    page = post(browser, "/account/contact/email", csrf, email=NEW_EMAIL)
    assert error_text(page) is None


def test_one_change_at_a_time(make_app, smtp_server, http_receiver):
    app = make_app(mail_url=smtp_server.url, sms_webhook_url=http_receiver.url("/sms"))
    create_user(app, phone="+14155550100")
    browser, csrf = signed_in(app)
    post(browser, "/account/contact/email", csrf, email=NEW_EMAIL)
    smtp_server.sink.wait_for(1, subject_contains="email change code")

    # Forged straight at the form targets (the page no longer shows them):
    page = post(browser, "/account/contact/phone", csrf, phone="+14155550199")
    assert error_text(page) == ONE_AT_A_TIME
    page = post(browser, "/account/contact/email", csrf, email="third@example.com")
    assert error_text(page) == ONE_AT_A_TIME
    page = post(browser, "/account/contact/phone/remove", csrf)
    assert error_text(page) == ONE_AT_A_TIME
    assert http_receiver.requests == []
    deletion = browser.get("/account/delete").get_data(as_text=True)
    assert ONE_AT_A_TIME in deletion and "Send the codes" not in deletion

    # Cancelled, the next change may start.
    page = post(browser, "/account/contact/cancel", csrf)
    assert notice_text(page) == "The change was cancelled."
    page = post(browser, "/account/contact/phone", csrf, phone="+14155550199")
    assert error_text(page) is None
    assert len(http_receiver.json_bodies()) == 1


def test_an_expired_code_is_refused_and_a_new_one_works(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, otp_code_ttl=1, otp_resend_cooldown=1)
    user_id = create_user(app)
    sink = smtp_server.sink
    browser, csrf = signed_in(app)
    post(browser, "/account/contact/email", csrf, email=NEW_EMAIL)
    old_code = code_in_email(sink, sink.wait_for(1, subject_contains="email change code")[0])
    time.sleep(1.5)
    page = post(browser, "/account/contact/verify", csrf, code=old_code)
    assert error_text(page) == WRONG_CODE
    assert user_row(app, user_id)["email"] == EMAIL

    page = post(browser, "/account/contact/resend", csrf)
    assert notice_text(page) == "A new code is on its way; the old one no longer works."
    new_code = code_in_email(sink, sink.wait_for(2, subject_contains="email change code")[1])
    page = post(browser, "/account/contact/verify", csrf, code=new_code)
    assert notice_text(page) == "Your email address was changed."
    assert user_row(app, user_id)["email"] == NEW_EMAIL


def test_the_change_needs_a_fresh_sign_in(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, reauth_max_age=1)
    create_user(app)
    browser, csrf = signed_in(app)
    time.sleep(1.5)
    response = browser.post("/account/contact/email", data={"csrf_token": csrf, "email": NEW_EMAIL})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?")
    assert "next=%2Faccount%2Fcontact" in response.headers["Location"]
    assert browser.get("/account/contact").status_code == 302
    time.sleep(0.3)
    assert [m for m in smtp_server.sink.messages if "code" in m["Subject"]] == []


def test_phone_change_by_sms_and_removal_turns_sms_codes_off(make_app, http_receiver):
    app = make_app(sms_webhook_url=http_receiver.url("/sms"))
    user_id = create_user(app, phone="+14155550100", sms_otp_enabled=True)
    # With SMS codes on, the fresh sign-in itself takes the SMS step.
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    page = browser.get("/login/2fa").get_data(as_text=True)
    [sign_in] = http_receiver.json_bodies()
    code = re.match(r"(\d{6}) ", sign_in["text"]).group(1)
    assert browser.post("/login/2fa", data={"csrf_token": csrf_from(page), "method": "sms",
                                            "code": code}).status_code == 303
    csrf = csrf_from(browser.get("/account/contact").get_data(as_text=True))

    page = post(browser, "/account/contact/phone", csrf, phone="+1 415 555 0199")
    assert notice_text(page) == "We sent a 6-digit code to your new number. Enter it to finish the change."
    body = http_receiver.json_bodies()[-1]
    assert body["to"] == "+14155550199"
    match = re.fullmatch(r"(\d{6}) is your idp phone change code\. It expires in 1 minute\(s\)\. Never share it\.",
                         body["text"])
    assert match, body
    page = post(browser, "/account/contact/verify", csrf, code=match.group(1))
    assert notice_text(page) == "Your phone number was changed."
    row = user_row(app, user_id)
    assert row["phone"] == "+14155550199" and row["phone_verified"] and row["sms_otp_enabled"]
    told = http_receiver.json_bodies()[-1]
    assert told["to"] == "+14155550100" and "was changed" in told["text"]

    page = post(browser, "/account/contact/phone/remove", csrf)
    assert notice_text(page) == "Your phone number was removed. SMS codes are off."
    row = user_row(app, user_id)
    assert row["phone"] is None and not row["phone_verified"] and not row["sms_otp_enabled"]
    removed = http_receiver.json_bodies()[-1]
    assert removed["to"] == "+14155550199" and "removed" in removed["text"]
    assert {"phone_changed", "phone_removed", "factor_removed"} <= set(events(app, user_id))


def test_bad_input_gives_a_friendly_page(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    create_user(app)
    browser, csrf = signed_in(app)
    page = post(browser, "/account/contact/phone", csrf, phone="0800 not a number")
    assert error_text(page) == "Enter the phone number in international format, e.g. +14155550123."
    page = post(browser, "/account/contact/verify", csrf, code="123456")
    assert error_text(page) == "There is no change to confirm, or it ran out. Start again."
    response = browser.post("/account/contact/email", data={"email": NEW_EMAIL})  # no CSRF token
    assert response.status_code == 400
