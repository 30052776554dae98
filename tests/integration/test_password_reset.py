"""Password reset at /reset (SPEC §4 password-reset row, §6.3, §6.6, §6.10; CONFORMANCE D08): codes to
the email address (and the phone on file), the same answers for unknown addresses, limits, and a reset
that ends every session, forgets trusted devices and never skips the second factor."""

from __future__ import annotations

import re
import time

from sqlalchemy import func, select

from idp.extensions import db
from idp.storage.models import AuditEvent, BrowserSession, TrustedDevice
from tests.integration.mfa_support import (
    DEVICE_COOKIE,
    EMAIL,
    GENERIC_FAILURE,
    clock,  # noqa: F401  (fixture)
    code_in_email,
    create_user,
    enrol_totp,
    error_text,
    ip,
    is_signed_in,
    new_browser,
    notice_text,
    password_step,
    set_cookie_header,
    submit_code,
    to_second_factor,
)
from tests.support import PASSWORD, csrf_from

NEW_PASSWORD = "violet tractor quantum marmalade 1987"
WRONG_CODE = "That code is not right. Check it and try again."
PHONE = "+14155550123"
UNKNOWN = "nobody@example.com"


def _app(make_app, smtp_server, http_receiver=None, **overrides):
    settings = {"mail_url": smtp_server.url, "password_reset_min_response_ms": 0, **overrides}
    if http_receiver is not None:
        settings["sms_webhook_url"] = http_receiver.url("/sms")
    return make_app(**settings)


def _request(browser, email: str = EMAIL, **kwargs):
    page = browser.get("/reset", **kwargs)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<label for="username">' in html and 'name="username"' in html
    return browser.post("/reset", data={"csrf_token": csrf_from(html), "username": email}, **kwargs)


def _codes(browser, email_code: str | None = None, sms_code: str | None = None, **kwargs):
    page = browser.get("/reset/codes", **kwargs)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    data = {"csrf_token": csrf_from(page.get_data(as_text=True))}
    if email_code is not None:
        data["email_code"] = email_code
    if sms_code is not None:
        data["sms_code"] = sms_code
    return browser.post("/reset/codes", data=data, **kwargs)


def _set_password(browser, password: str = NEW_PASSWORD):
    page = browser.get("/reset/password")
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    html = page.get_data(as_text=True)
    assert '<label for="password">' in html and 'name="password"' in html
    return browser.post("/reset/password", data={"csrf_token": csrf_from(html), "password": password})


def _email_code(smtp_server, count: int = 1) -> str:
    messages = smtp_server.sink.wait_for(count, subject_contains="password reset code")
    return code_in_email(smtp_server.sink, messages[-1])


def _sms_code(receiver, index: int = -1) -> str:
    return re.match(r"(\d{6}) ", receiver.json_bodies()[index]["text"]).group(1)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _events(app, name: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


def test_sign_in_page_links_to_reset(make_app):
    html = new_browser(make_app()).get("/login").get_data(as_text=True)
    assert '<a href="/reset">Forgot your password?</a>' in html


def test_reset_with_an_email_code(make_app, smtp_server):
    app = _app(make_app, smtp_server)
    user_id = create_user(app)
    browser = new_browser(app)
    started = _request(browser)
    assert started.status_code == 303 and started.headers["Location"] == "/reset/codes"
    page = browser.get("/reset/codes").get_data(as_text=True)
    assert '<label for="email_code">' in page and 'name="sms_code"' not in page
    code = _email_code(smtp_server)

    # The password step cannot be reached before the code.
    assert browser.get("/reset/password").headers["Location"] == "/reset/codes"
    verified = _codes(browser, code)
    assert verified.status_code == 303 and verified.headers["Location"] == "/reset/password"

    weak = _set_password(browser, "password1234")
    assert weak.status_code == 200 and "too easy to guess" in error_text(weak)
    done = _set_password(browser)
    assert done.status_code == 200 and "Password changed" in done.get_data(as_text=True)
    notice = smtp_server.sink.wait_for(1, subject_contains="password was reset")[0]
    assert notice["To"] == EMAIL
    # Not signed in by the reset; the flow is over.
    assert not is_signed_in(browser)
    assert browser.get("/reset/password").headers["Location"].startswith("/reset?expired=1")

    old = password_step(new_browser(app), password=PASSWORD)
    assert old.status_code == 200 and error_text(old) == GENERIC_FAILURE
    signed_in = password_step(new_browser(app), password=NEW_PASSWORD)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] != "/login/2fa"
    [event] = _events(app, "password_reset")
    assert event.user_id == user_id and event.actor_type == "user"


def test_reset_with_email_and_sms_codes(make_app, smtp_server, http_receiver):
    app = _app(make_app, smtp_server, http_receiver)
    create_user(app, phone=PHONE)
    browser = new_browser(app)
    assert _request(browser).status_code == 303
    email_code = _email_code(smtp_server)
    [sms] = http_receiver.json_bodies()
    assert sms["to"] == PHONE and "password reset" in sms["text"]
    # The SMS field appears only once the email code was right.
    assert 'name="sms_code"' not in browser.get("/reset/codes").get_data(as_text=True)
    after_email = _codes(browser, email_code)
    assert after_email.status_code == 200
    assert '<label for="sms_code">' in after_email.get_data(as_text=True)
    assert 'name="email_code"' not in after_email.get_data(as_text=True)

    wrong = _codes(browser, sms_code=_wrong(_sms_code(http_receiver)))
    assert wrong.status_code == 200 and error_text(wrong) == WRONG_CODE
    done = _codes(browser, sms_code=_sms_code(http_receiver))
    assert done.status_code == 303 and done.headers["Location"] == "/reset/password"
    assert _set_password(browser).status_code == 200
    assert password_step(new_browser(app), password=NEW_PASSWORD).status_code == 303


def test_both_codes_in_one_post(make_app, smtp_server, http_receiver):
    app = _app(make_app, smtp_server, http_receiver)
    create_user(app, phone=PHONE)
    browser = new_browser(app)
    _request(browser)
    done = _codes(browser, _email_code(smtp_server), _sms_code(http_receiver))
    assert done.status_code == 303 and done.headers["Location"] == "/reset/password"


def test_an_unknown_address_gets_the_same_answers(make_app, smtp_server):
    app = _app(make_app, smtp_server, password_reset_min_response_ms=300)
    create_user(app)
    known, unknown = new_browser(app), new_browser(app)

    t0 = time.monotonic()
    known_start = _request(known, EMAIL)
    t1 = time.monotonic()
    unknown_start = _request(unknown, UNKNOWN)
    t2 = time.monotonic()
    assert (known_start.status_code, known_start.headers["Location"]) == (
        unknown_start.status_code, unknown_start.headers["Location"])
    # Both answers wait for the response floor, so the sending does not show.
    assert t1 - t0 >= 0.3 and t2 - t1 >= 0.3

    known_page = known.get("/reset/codes")
    unknown_page = unknown.get("/reset/codes")
    assert known_page.status_code == unknown_page.status_code == 200

    def shape(response, email):
        html = response.get_data(as_text=True).replace(email, "EMAIL")
        return re.sub(r'name="csrf_token" value="[^"]*"', "", html)

    assert shape(known_page, EMAIL) == shape(unknown_page, UNKNOWN)
    # No code was sent to the unknown address; any code is simply wrong.
    smtp_server.sink.wait_for(1, subject_contains="password reset code")
    time.sleep(0.2)
    assert [m["To"] for m in smtp_server.sink.messages] == [EMAIL]
    known_wrong = _codes(known, "000000" if _email_code(smtp_server) != "000000" else "111111")
    unknown_wrong = _codes(unknown, "123456")
    assert known_wrong.status_code == unknown_wrong.status_code == 200
    assert error_text(known_wrong) == error_text(unknown_wrong) == WRONG_CODE
    assert shape(known_wrong, EMAIL) == shape(unknown_wrong, UNKNOWN)


def test_wrong_and_expired_codes(make_app, smtp_server):
    app = _app(make_app, smtp_server, otp_code_ttl=1, otp_resend_cooldown=1, code_failures_per_ip=10,
               code_failures_per_account=10)
    create_user(app)
    browser = new_browser(app)
    _request(browser)
    code = _email_code(smtp_server)
    wrong = _codes(browser, _wrong(code))
    assert wrong.status_code == 200 and error_text(wrong) == WRONG_CODE
    empty = _codes(browser, "")
    assert empty.status_code == 200 and error_text(empty) == WRONG_CODE
    time.sleep(1.5)
    expired = _codes(browser, code)
    assert expired.status_code == 200 and error_text(expired) == WRONG_CODE

    # A resent code works, once.
    page = browser.get("/reset/codes").get_data(as_text=True)
    resent = browser.post("/reset/resend", data={"csrf_token": csrf_from(page), "channel": "email"})
    assert resent.status_code == 200 and "new code" in notice_text(resent)
    fresh = _email_code(smtp_server, 2)
    assert _codes(browser, fresh).status_code == 303
    # Bad channel values give a friendly page.
    assert browser.post("/reset/resend", data={"csrf_token": csrf_from(page), "channel": "pigeon"}).status_code in (
        303, 302, 400)


def test_reset_pages_without_a_flow_send_back_to_the_start(make_app):
    app = make_app()
    browser = new_browser(app)
    page = browser.get("/reset").get_data(as_text=True)
    for path in ("/reset/codes", "/reset/password"):
        assert browser.get(path).headers["Location"].startswith("/reset?expired=1")
        response = browser.post(path, data={"csrf_token": csrf_from(page), "password": NEW_PASSWORD})
        assert response.headers["Location"].startswith("/reset?expired=1")
    assert "took too long" in notice_text(browser.get("/reset?expired=1"))
    blank = browser.post("/reset", data={"csrf_token": csrf_from(page), "username": "   "})
    assert blank.status_code == 200 and error_text(blank) == "Enter the email address of your account."


def test_reset_requests_are_throttled_per_account_and_per_ip(make_app, smtp_server):
    app = _app(make_app, smtp_server, password_reset_per_account=2, password_reset_per_ip=4, otp_resend_cooldown=1)
    create_user(app)
    for email in (EMAIL, UNKNOWN):
        browser = new_browser(app)
        assert _request(browser, email, **ip("10.0.0.1")).status_code == 303
        assert _request(browser, email, **ip("10.0.0.2")).status_code == 303
        throttled = _request(browser, email, **ip("10.0.0.3"))
        assert throttled.status_code == 429 and "Too many password reset requests" in error_text(throttled)
        assert throttled.headers["Retry-After"]
    assert len(smtp_server.sink.wait_for(2, subject_contains="password reset code")) == 2
    # Per IP: other addresses from one address.
    browser = new_browser(app)
    statuses = [_request(browser, f"person{i}@example.com", **ip("10.0.0.9")).status_code for i in range(5)]
    assert statuses == [303, 303, 303, 303, 429]


def test_wrong_codes_block_the_ip(make_app, smtp_server):
    app = _app(make_app, smtp_server)
    create_user(app)
    browser = new_browser(app)
    _request(browser)
    code = _email_code(smtp_server)
    assert error_text(_codes(browser, _wrong(code))) == WRONG_CODE
    assert error_text(_codes(browser, _wrong(_wrong(code)))) == WRONG_CODE
    blocked = _codes(browser, _wrong(_wrong(_wrong(code))))
    assert blocked.status_code == 429 and "Too many wrong codes" in error_text(blocked)
    # Even the right code is refused while the block lasts.
    assert _codes(browser, code).status_code == 429


def test_reset_ends_sessions_forgets_devices_and_keeps_the_second_factor(make_app, smtp_server, clock):
    app = _app(make_app, smtp_server)
    user_id = create_user(app)
    phone = enrol_totp(app, user_id, clock)
    other = new_browser(app)
    to_second_factor(other)
    trusted = submit_code(other, phone.next_code(), trust_device="1", device_name="Laptop")
    assert trusted.status_code == 303 and set_cookie_header(trusted, DEVICE_COOKIE)
    assert is_signed_in(other)

    browser = new_browser(app)
    _request(browser)
    assert _codes(browser, _email_code(smtp_server)).status_code == 303
    assert _set_password(browser).status_code == 200

    assert not is_signed_in(other)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(TrustedDevice)
                                 .where(TrustedDevice.user_id == user_id)) == 0
        reasons = db.session.scalars(select(BrowserSession.end_reason).where(BrowserSession.user_id == user_id)).all()
        assert reasons and set(reasons) == {"password_reset"}
    ended = [e for e in _events(app, "session_ended") if e.user_id == user_id]
    assert ended and all(e.actor_type == "user" and e.actor_id == user_id for e in ended)

    # The old trusted-device cookie no longer skips the factor; the new password still needs it.
    old = password_step(other, password=PASSWORD)
    assert old.status_code == 200 and error_text(old) == GENERIC_FAILURE
    to_second_factor(other, password=NEW_PASSWORD)
    assert submit_code(other, phone.next_code()).status_code == 303
    assert is_signed_in(other)


def test_a_mail_outage_answers_the_same_for_known_and_unknown_addresses(make_app):
    app = make_app(mail_url="smtp://127.0.0.1:1", password_reset_min_response_ms=0)
    create_user(app)
    answers = []
    for address in (EMAIL, UNKNOWN):
        browser = new_browser(app)
        response = _request(browser, address)
        page = browser.get("/reset/codes")
        answers.append((response.status_code, response.headers.get("Location"), page.status_code,
                        page.get_data(as_text=True).replace(address, "ADDRESS").count("<input")))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (303, "/reset/codes")
