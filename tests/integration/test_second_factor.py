"""The second-factor step of the hosted sign-in, on both backends, against real SMTP and SMS peers.

Contract: SPEC §4 (second-factor fields), §6.1 (TOTP, enabling 2FA ends other sessions), §6.2
(email / SMS codes), §6.4 (trusted devices), §6.6 (password change); CONFORMANCE C08, C10, C11,
D09–D11; RFC 8176 `amr` and the documented `acr` values.
"""

from __future__ import annotations

import re
import time

import pyotp
import pytest
import time_machine

from idp.crypto.otp import TOTP_PERIOD
from tests.integration.mfa_support import (  # noqa: F401  (clock is a fixture)
    ACR_1FA,
    ACR_MFA,
    ACR_TWO_STEP,
    DEVICE_COOKIE,
    EMAIL,
    SESSION_COOKIE,
    UI_COOKIE,
    WRONG_CODE,
    Phone,
    clock,
    code_in_email,
    copy_cookie,
    create_rp,
    create_user,
    enrol_totp,
    error_text,
    id_token_claims,
    is_signed_in,
    load_user,
    new_browser,
    notice_text,
    password_step,
    second_factor_page,
    services_of,
    set_cookie_header,
    sign_in_with_totp,
    sign_out,
    submit_code,
    to_second_factor,
)
from tests.support import PASSWORD, csrf_from

FLOW_GONE = "/login?expired=1"
NEW_PASSWORD = "violet tractor quantum marmalade 1987"


def _totp_user(app, clock) -> Phone:
    return enrol_totp(app, create_user(app), clock)


# -- authenticator app (TOTP) ---------------------------------------------------------------------


def test_password_then_totp_gives_an_id_token_with_pwd_otp_mfa(app, clock):
    phone = _totp_user(app, clock)
    rp = create_rp(app)

    def prove(client, _response):
        assert not is_signed_in(client), "the password alone must not sign in an account with a second factor"
        page = second_factor_page(client).get_data(as_text=True)
        assert '<label for="code">Verification code</label>' in page
        assert '<input id="trust_device" name="trust_device" type="checkbox" value="1">' in page
        assert '<label for="trust_device">Trust this device</label>' in page
        assert 'name="device_name"' in page
        assert '<input type="hidden" name="method" value="totp">' in page
        wrong = submit_code(client, phone.wrong_code())
        assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE)
        assert not is_signed_in(client)
        done = submit_code(client, phone.next_code())
        # The last step answers the authorization request itself: straight back to the app with a code.
        assert done.status_code == 303 and done.headers["Location"].startswith(rp["redirect_uri"] + "?code=")
        return done

    claims = id_token_claims(app, rp, new_browser(app), prove)
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_a_totp_code_is_accepted_once_even_in_a_new_sign_in(app, clock):
    phone = _totp_user(app, clock)
    code = phone.next_code()

    first = new_browser(app)
    to_second_factor(first)
    assert submit_code(first, code).status_code == 303

    second = new_browser(app)
    to_second_factor(second)
    replay = submit_code(second, code)
    assert replay.status_code == 200
    assert error_text(replay) == WRONG_CODE
    assert not is_signed_in(second)

    # The same browser cannot reuse it either, while the code is still inside its time window.
    sign_out(first)
    to_second_factor(first)
    again = submit_code(first, code)
    assert (again.status_code, error_text(again)) == (200, WRONG_CODE)


def test_totp_drift_window_is_one_step_either_side(app):
    # Enrolled ten minutes before the test's moment, so replay protection plays no part below.
    start = (int(time.time()) // TOTP_PERIOD) * TOTP_PERIOD + 15  # mid-step: no boundary to race
    with time_machine.travel(start - 600, tick=False) as traveller:
        phone = enrol_totp(app, create_user(app), traveller)
    totp = pyotp.TOTP(phone.secret)
    with time_machine.travel(start, tick=False):
        browser = new_browser(app)
        to_second_factor(browser)
        for too_far in (start + 2 * TOTP_PERIOD, start - 2 * TOTP_PERIOD):
            refused = submit_code(browser, totp.at(too_far))
            assert (refused.status_code, error_text(refused)) == (200, WRONG_CODE), too_far - start
        assert submit_code(browser, totp.at(start - TOTP_PERIOD)).status_code == 303, "previous step"

        other = new_browser(app)
        to_second_factor(other)
        assert submit_code(other, totp.at(start + TOTP_PERIOD)).status_code == 303, "next step"


# -- email and SMS codes ----------------------------------------------------------------------------


def _email_user(app) -> str:
    return create_user(app, email_otp_enabled=True)


def test_email_code_arrives_works_once_and_says_two_step_not_mfa(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    user_id = _email_user(app)
    rp = create_rp(app)
    sink = smtp_server.sink

    def prove(client, _response):
        page = second_factor_page(client)
        assert 'value="email"' in page.get_data(as_text=True)
        [message] = sink.wait_for(1, subject_contains="sign-in code")
        assert message["To"] == EMAIL
        text = sink.text_of(message)
        code = code_in_email(sink, message)
        assert re.fullmatch(r"\d{6}", code), code
        assert message["Subject"] == f"{code} is your idp sign-in code"
        assert "It expires in 1 minute(s) and works once." in text
        # Showing the page again does not send another code, nor does "Resend" within the cooldown.
        csrf = csrf_from(second_factor_page(client).get_data(as_text=True))
        too_soon = client.post("/login/2fa/resend", data={"csrf_token": csrf, "method": "email"})
        assert too_soon.status_code == 429
        wait = re.fullmatch(r"A code was just sent\. You can ask for another in (\d+) seconds\.",
                            error_text(too_soon) or "")
        assert wait and 25 <= int(wait.group(1)) <= 30, error_text(too_soon)
        assert len(sink.messages) == 1
        wrong = submit_code(client, f"{(int(code) + 1) % 1_000_000:06d}", method="email")
        assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE)
        prove.code = code
        return submit_code(client, code, method="email")

    browser = new_browser(app)
    claims = id_token_claims(app, rp, browser, prove)
    # NIST SP 800-63B §5.1.3.1: email proves no device, so never "mfa".
    assert claims["amr"] == ["pwd", "email"]
    assert claims["acr"] == ACR_TWO_STEP

    # Single use, at the service: a code checked right is gone.
    with app.app_context():
        svc = services_of(app)
        user = load_user(app, user_id)
        svc.factors.send_code(user, "flow-under-test", "email")
        code = code_in_email(sink, sink.wait_for(2, subject_contains="sign-in code")[1])
        assert svc.factors.verify_code(user, "flow-under-test", "email", code) is True
        assert svc.factors.verify_code(user, "flow-under-test", "email", code) is False


def test_the_page_shows_the_strongest_method_first_and_remembers_another_choice(make_app, smtp_server, clock):
    app = make_app(mail_url=smtp_server.url)
    enrol_totp(app, _email_user(app), clock)
    client = new_browser(app)
    to_second_factor(client)
    shown = second_factor_page(client).get_data(as_text=True)
    assert '<input type="hidden" name="method" value="totp">' in shown
    switched = second_factor_page(client, "email").get_data(as_text=True)
    assert '<input type="hidden" name="method" value="email">' in switched
    smtp_server.sink.wait_for(1, subject_contains="sign-in code")
    # Shown again without asking: the method chosen last, and no second code.
    again = second_factor_page(client).get_data(as_text=True)
    assert '<input type="hidden" name="method" value="email">' in again
    assert len(smtp_server.sink.messages) == 1


def test_email_code_expires_after_its_lifetime(make_app, smtp_server):
    # The code lives in the store with a TTL (Redis EXPIRE or the in-process clock, neither of which a
    # fake wall clock can move), so the lifetime is shortened and really waited out.
    app = make_app(mail_url=smtp_server.url, otp_code_ttl=1)
    _email_user(app)
    browser = new_browser(app)
    to_second_factor(browser)
    csrf = csrf_from(second_factor_page(browser).get_data(as_text=True))
    code = code_in_email(smtp_server.sink, smtp_server.sink.wait_for(1, subject_contains="sign-in code")[0])
    time.sleep(1.3)
    expired = submit_code(browser, code, method="email", csrf=csrf)
    assert (expired.status_code, error_text(expired)) == (200, WRONG_CODE)
    assert not is_signed_in(browser)


def test_resend_waits_for_the_cooldown_and_replaces_the_old_code(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url, otp_resend_cooldown=1)
    _email_user(app)
    sink = smtp_server.sink
    browser = new_browser(app)
    to_second_factor(browser)
    csrf = csrf_from(second_factor_page(browser).get_data(as_text=True))
    old = code_in_email(sink, sink.wait_for(1, subject_contains="sign-in code")[0])

    too_soon = browser.post("/login/2fa/resend", data={"csrf_token": csrf, "method": "email"})
    assert too_soon.status_code == 429
    assert re.fullmatch(r"A code was just sent\. You can ask for another in 1 seconds\.",
                        error_text(too_soon) or ""), error_text(too_soon)
    assert len(sink.messages) == 1

    time.sleep(1.2)
    resent = browser.post("/login/2fa/resend", data={"csrf_token": csrf, "method": "email"})
    assert resent.status_code == 200
    assert notice_text(resent) == "We sent a new code. The previous one no longer works."
    new = code_in_email(sink, sink.wait_for(2, subject_contains="sign-in code")[1])
    assert new != old

    stale = submit_code(browser, old, method="email", csrf=csrf)
    assert (stale.status_code, error_text(stale)) == (200, WRONG_CODE)
    assert submit_code(browser, new, method="email", csrf=csrf).status_code == 303
    assert is_signed_in(browser)


def test_an_email_code_from_one_sign_in_is_refused_in_another(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    _email_user(app)
    sink = smtp_server.sink
    login_a, login_b = new_browser(app), new_browser(app)
    to_second_factor(login_a)
    csrf_a = csrf_from(second_factor_page(login_a).get_data(as_text=True))
    code_a = code_in_email(sink, sink.wait_for(1, subject_contains="sign-in code")[0])
    to_second_factor(login_b)
    csrf_b = csrf_from(second_factor_page(login_b).get_data(as_text=True))
    code_b = code_in_email(sink, sink.wait_for(2, subject_contains="sign-in code")[1])
    if code_a == code_b:  # one chance in a million; the binding is what is under test
        pytest.skip("both sign-ins drew the same code")

    crossed = submit_code(login_b, code_a, method="email", csrf=csrf_b)
    assert (crossed.status_code, error_text(crossed)) == (200, WRONG_CODE)
    assert not is_signed_in(login_b)
    assert submit_code(login_a, code_a, method="email", csrf=csrf_a).status_code == 303
    assert submit_code(login_b, code_b, method="email", csrf=csrf_b).status_code == 303


def test_sms_code_through_the_webhook(make_app, http_receiver):
    app = make_app(sms_webhook_url=http_receiver.url("/sms"))
    create_user(app, phone="+14155550100", sms_otp_enabled=True)
    rp = create_rp(app)

    def prove(client, _response):
        page = second_factor_page(client).get_data(as_text=True)
        assert '<input type="hidden" name="method" value="sms">' in page
        [body] = http_receiver.json_bodies()
        assert set(body) == {"to", "text"} and body["to"] == "+14155550100"
        match = re.fullmatch(r"(\d{6}) is your idp sign-in code\. It expires in 1 minute\(s\)\. Never share it\.",
                             body["text"])
        assert match, body["text"]
        assert http_receiver.requests[0]["path"] == "/sms"
        return submit_code(client, match.group(1), method="sms")

    claims = id_token_claims(app, rp, new_browser(app), prove)
    assert claims["amr"] == ["pwd", "sms", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_a_code_that_could_not_be_sent_blocks_nothing_and_replaces_nothing(make_app, http_receiver):
    app = make_app(sms_webhook_url=http_receiver.url("/sms"), otp_resend_cooldown=1)
    create_user(app, phone="+14155550100", sms_otp_enabled=True)
    browser = new_browser(app)
    to_second_factor(browser)

    http_receiver.status = 503  # the SMS gateway is down
    failed = browser.get("/login/2fa")
    assert (failed.status_code, error_text(failed)) == (
        503, "We could not send the text message. Please try again in a moment.")
    http_receiver.status = 200
    # Nothing was sent, so no cooldown holds the person back and no "we sent a code" is claimed.
    retried = second_factor_page(browser)
    assert notice_text(retried) is None, notice_text(retried)
    [body] = http_receiver.json_bodies()
    first_code = body["text"][:6]
    csrf = csrf_from(retried.get_data(as_text=True))

    time.sleep(1.2)
    http_receiver.status = 503
    resend = browser.post("/login/2fa/resend", data={"csrf_token": csrf, "method": "sms"})
    assert (resend.status_code, error_text(resend)) == (
        503, "We could not send the text message. Please try again in a moment.")
    http_receiver.status = 200
    # A new code nobody received does not replace the one the person has.
    assert submit_code(browser, first_code, method="sms", csrf=csrf).status_code == 303


# -- recovery codes ---------------------------------------------------------------------------------


def _recovery_codes(browser) -> list[str]:
    page = browser.get("/account/security")
    response = browser.post("/account/security/recovery-codes",
                            data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert response.status_code == 200, response.status_code
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", response.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    return codes


def _recovery_left(browser) -> str:
    page = browser.get("/account/security").get_data(as_text=True)
    return re.search(r'<p id="recovery-status">([^<]*)</p>', page).group(1)


def test_recovery_codes_work_once_and_regenerating_voids_the_old_set(app, clock):
    phone = _totp_user(app, clock)
    owner = new_browser(app)
    sign_in_with_totp(owner, phone)
    assert _recovery_left(owner) == "No recovery codes."
    codes = _recovery_codes(owner)
    assert _recovery_left(owner) == "10 of 10 recovery codes left."

    first = new_browser(app)
    to_second_factor(first)
    page = second_factor_page(first, "recovery").get_data(as_text=True)
    assert '<label for="code">Recovery code</label>' in page
    assert submit_code(first, codes[0].upper().replace("-", " "), method="recovery").status_code == 303

    second = new_browser(app)
    to_second_factor(second)
    used = submit_code(second, codes[0], method="recovery")
    assert (used.status_code, error_text(used)) == (200, WRONG_CODE)
    assert submit_code(second, codes[1], method="recovery").status_code == 303
    assert _recovery_left(owner) == "8 of 10 recovery codes left."

    fresh = _recovery_codes(owner)
    assert not set(fresh) & set(codes)
    third = new_browser(app)
    to_second_factor(third)
    voided = submit_code(third, codes[2], method="recovery")
    assert (voided.status_code, error_text(voided)) == (200, WRONG_CODE)
    assert submit_code(third, fresh[0], method="recovery").status_code == 303


# -- trusted devices ------------------------------------------------------------------------------


def _device_rows(browser) -> list[tuple[str, str]]:
    page = browser.get("/account/devices")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    return re.findall(r'<tr data-device-id="([^"]+)">.*?name="name" type="text" maxlength="100" value="([^"]*)"',
                      html, re.S)


def test_trusted_device_skips_the_second_factor_until_it_is_deleted(app, clock):
    phone = _totp_user(app, clock)
    rp = create_rp(app)
    browser = new_browser(app)
    to_second_factor(browser)
    done = submit_code(browser, phone.next_code(), trust_device="1", device_name="  Office   laptop ")
    assert done.status_code == 303
    cookie = set_cookie_header(done, DEVICE_COOKIE)
    assert cookie is not None, done.headers.getlist("Set-Cookie")
    assert len(cookie["value"]) >= 40
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert cookie["max-age"] == str(30 * 24 * 3600)
    [(device_id, name)] = _device_rows(browser)
    assert name == "Office laptop"
    assert "(this browser)" in browser.get("/account/devices").get_data(as_text=True)

    sign_out(browser)
    claims = id_token_claims(app, rp, browser, prove=lambda *_: pytest.fail("second factor asked again"))
    # A trusted-device skip proves nothing this time: no otp, no mfa.
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == ACR_1FA

    # Another browser, without the cookie, is still asked.
    to_second_factor(new_browser(app))

    page = browser.get("/account/devices").get_data(as_text=True)
    renamed = browser.post(f"/account/devices/{device_id}/rename",
                           data={"csrf_token": csrf_from(page), "name": "Kitchen tablet"})
    assert renamed.status_code == 302 and renamed.headers["Location"] == "/account/devices"
    assert notice_text(browser.get("/account/devices")) == "The device was renamed."
    assert _device_rows(browser) == [(device_id, "Kitchen tablet")]

    # Another account cannot rename or delete it.
    create_user(app, email="mallory@example.com")
    mallory = new_browser(app)
    assert password_step(mallory, "mallory@example.com").status_code == 303
    csrf = csrf_from(mallory.get("/account/security").get_data(as_text=True))
    mallory.post(f"/account/devices/{device_id}/rename", data={"csrf_token": csrf, "name": "Pwned"})
    mallory.post(f"/account/devices/{device_id}/delete", data={"csrf_token": csrf})
    assert _device_rows(browser) == [(device_id, "Kitchen tablet")]

    page = browser.get("/account/devices").get_data(as_text=True)
    deleted = browser.post(f"/account/devices/{device_id}/delete", data={"csrf_token": csrf_from(page)})
    assert deleted.status_code == 302 and deleted.headers["Location"] == "/account/devices"
    after = browser.get("/account/devices")
    assert notice_text(after) == "The device is no longer trusted. It will be asked for a second factor again."
    assert "No trusted devices." in after.get_data(as_text=True)
    assert _device_rows(browser) == []

    sign_out(browser)
    assert browser.get_cookie(DEVICE_COOKIE) is not None, "the cookie stays; the server no longer trusts it"
    to_second_factor(browser)


def test_password_change_forgets_devices_and_ends_other_sessions(app, clock):
    phone = _totp_user(app, clock)
    elsewhere = new_browser(app)
    sign_in_with_totp(elsewhere, phone)
    browser = new_browser(app)
    sign_in_with_totp(browser, phone, trust_device="1", device_name="Laptop")
    assert len(_device_rows(browser)) == 1

    page = browser.get("/account/security").get_data(as_text=True)
    changed = browser.post("/account/security/password", data={
        "csrf_token": csrf_from(page), "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert changed.status_code == 302 and changed.headers["Location"] == "/account/security"
    assert notice_text(browser.get("/account/security")) == (
        "Your password was changed. 1 other session(s) were signed out.")

    assert is_signed_in(browser), "the session that changed the password stays"
    assert not is_signed_in(elsewhere), "the other browser's session cookie stopped working"
    assert _device_rows(browser) == []

    sign_out(browser)
    assert browser.get_cookie(DEVICE_COOKIE) is not None
    assert password_step(browser).status_code == 200, "the old password no longer works"
    response = password_step(browser, password=NEW_PASSWORD)
    assert response.status_code == 303 and response.headers["Location"] == "/login/2fa", \
        "the forgotten device must be asked for the second factor again"


def test_enabling_the_first_second_factor_ends_the_other_sessions(app):
    create_user(app)
    elsewhere, browser = new_browser(app), new_browser(app)
    for client in (elsewhere, browser):
        signed = password_step(client)
        assert signed.status_code == 303 and signed.headers["Location"] == "/account"
    page = browser.get("/account/security/totp")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', html).group(1)
    enrolment_id = re.search(r'name="enrolment_id" value="([^"]+)"', html).group(1)
    assert "<svg" in html

    wrong = browser.post("/account/security/totp", data={
        "csrf_token": csrf_from(html), "enrolment_id": enrolment_id, "code": "12345", "name": "Phone"})
    assert wrong.status_code == 400
    assert is_signed_in(elsewhere), "a refused code enables nothing and ends nothing"

    enrolment_code = pyotp.TOTP(secret).now()
    enabled = browser.post("/account/security/totp", data={
        "csrf_token": csrf_from(html), "enrolment_id": enrolment_id, "code": enrolment_code, "name": "Phone"})
    assert enabled.status_code == 302 and enabled.headers["Location"] == "/account/security"
    assert notice_text(browser.get("/account/security")) == "Your authenticator app is set up."
    assert is_signed_in(browser)
    assert not is_signed_in(elsewhere)
    # From now on the password alone is not enough, and the code that confirmed the app is spent.
    sign_out(browser)
    to_second_factor(browser)
    replay = submit_code(browser, enrolment_code)
    assert (replay.status_code, error_text(replay)) == (200, WRONG_CODE)


# -- the step cannot be skipped, moved or replayed ----------------------------------------------------


def test_second_factor_without_a_flow_sends_the_person_to_sign_in(app):
    browser = new_browser(app)
    shown = browser.get("/login/2fa")
    assert shown.status_code == 302 and shown.headers["Location"] == FLOW_GONE
    csrf = csrf_from(browser.get("/login").get_data(as_text=True))
    posted = browser.post("/login/2fa", data={"csrf_token": csrf, "method": "totp", "code": "123456"})
    assert posted.status_code == 302 and posted.headers["Location"] == FLOW_GONE
    resend = browser.post("/login/2fa/resend", data={"csrf_token": csrf, "method": "email"})
    assert resend.status_code == 302 and resend.headers["Location"] == FLOW_GONE
    assert not is_signed_in(browser)


def test_a_pending_flow_refuses_other_browsers_and_methods_the_user_lacks(app, clock):
    phone = _totp_user(app, clock)
    owner = new_browser(app)
    to_second_factor(owner)

    page = second_factor_page(owner).get_data(as_text=True)
    assert 'data-method="recovery"' not in page
    no_codes = submit_code(owner, "abcde-fghjk", method="recovery", csrf=csrf_from(page))
    assert no_codes.status_code == 302 and no_codes.headers["Location"] == "/login/2fa"
    assert set_cookie_header(no_codes, SESSION_COOKIE) is None
    assert not is_signed_in(owner)

    code = phone.next_code()

    intruder = new_browser(app)
    csrf = csrf_from(intruder.get("/login").get_data(as_text=True))
    stolen = intruder.post("/login/2fa", data={"csrf_token": csrf, "method": "totp", "code": code})
    assert stolen.status_code == 302 and stolen.headers["Location"] == FLOW_GONE
    assert not is_signed_in(intruder)
    assert submit_code(owner, code).status_code == 303, "the flow is intact and the code was not used up"


def test_a_finished_flow_cannot_be_replayed(app, clock):
    phone = _totp_user(app, clock)
    browser = new_browser(app)
    to_second_factor(browser)
    csrf = csrf_from(second_factor_page(browser).get_data(as_text=True))
    replayer = new_browser(app)
    copy_cookie(browser, replayer, UI_COOKIE)  # the browser's state just before it finished

    assert submit_code(browser, phone.next_code(), csrf=csrf).status_code == 303
    # Finishing cleared this browser's UI state, CSRF secret included (no fixation) ...
    stale_form = browser.post("/login/2fa", data={"csrf_token": csrf, "method": "totp", "code": phone.next_code()})
    assert stale_form.status_code == 400
    # ... and with a fresh form there is no flow left to finish.
    fresh_csrf = csrf_from(browser.get("/login").get_data(as_text=True))
    again = browser.post("/login/2fa", data={"csrf_token": fresh_csrf, "method": "totp", "code": phone.next_code()})
    assert again.status_code == 302 and again.headers["Location"] == FLOW_GONE

    replay = replayer.post("/login/2fa", data={"csrf_token": csrf, "method": "totp", "code": phone.next_code()})
    assert replay.status_code == 302 and replay.headers["Location"] == FLOW_GONE
    assert set_cookie_header(replay, SESSION_COOKIE) is None
    assert not is_signed_in(replayer)
