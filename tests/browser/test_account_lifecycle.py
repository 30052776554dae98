"""In a real browser: sign up with an email code, set up an authenticator app, sign in through a
relying app; and a password reset that ends a session open in another browser."""

from __future__ import annotations

import email
import re
import time
from email.policy import default as default_policy

import pyotp
import pytest

from tests.browser.test_totp_trusted_device import CALLBACK, RelyingApp, _next_code, _sign_out

pytestmark = pytest.mark.browser

NEW_EMAIL = "installer@example.com"
NEW_PASSWORD = "granite lighthouse across the quiet bay"


def _latest_code(live_idp, subject_part: str, seen: set[str]) -> str:
    """The 6-digit code of the newest matching message in the file outbox (IDP_MAIL_URL=file://…)."""
    outbox = live_idp.deployment.tmp_path / "mail"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
            if path.name in seen:
                continue
            message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            if subject_part in message["Subject"]:
                seen.add(path.name)
                text = message.get_body(preferencelist=("plain",)).get_content()
                return re.search(r"^\s+(\d{6})\s*$", text, re.M).group(1)
        time.sleep(0.2)
    raise AssertionError(f"no email with {subject_part!r} arrived")


@pytest.fixture
def live_idp_with_signup(deployment):  # noqa: F811  (fixture from tests.browser.conftest)
    deployment.env["IDP_SIGNUP_ENABLED"] = "1"
    return deployment


def test_sign_up_with_email_code_enrol_totp_and_sign_in_through_an_app(context, live_idp_with_signup, request):
    live_idp = request.getfixturevalue("live_idp")
    page = context.new_page()
    seen: set[str] = set()
    app = RelyingApp(live_idp, page)

    page.goto(f"{live_idp.base}/login")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email", exact=True).fill(NEW_EMAIL)
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Email code").fill(_latest_code(live_idp, "code", seen))
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(f"{live_idp.base}/account/security**")

    page.get_by_role("link", name="Set up an authenticator app").click()
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text().strip())
    used = {totp.now()}
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_url(f"{live_idp.base}/account/security")
    _sign_out(page, live_idp)

    page.goto(app.authorization_url())
    page.get_by_label("Email", exact=True).fill(NEW_EMAIL)
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{live_idp.base}/login/2fa**")
    page.get_by_label("Verification code").fill(_next_code(totp, used))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{CALLBACK}**")
    claims = app.redeem(page.url)
    assert claims["amr"] == ["pwd", "otp", "mfa"]


def test_password_reset_ends_a_session_open_in_another_browser(chromium, context, live_idp):
    seen: set[str] = set()
    office = context.new_page()
    office.goto(f"{live_idp.base}/login?next=/account")
    office.get_by_label("Email", exact=True).fill(live_idp.email)
    office.get_by_label("Password", exact=True).fill(live_idp.password)
    office.get_by_role("button", name="Sign in", exact=True).click()
    office.wait_for_url(f"{live_idp.base}/account")

    phone_context = chromium.new_context()
    try:
        phone = phone_context.new_page()
        phone.goto(f"{live_idp.base}/login")
        phone.get_by_role("link", name="Forgot your password?").click()
        phone.get_by_label("Email", exact=True).fill(live_idp.email)
        phone.get_by_role("button", name="Send a code").click()
        phone.get_by_label("Email code").fill(_latest_code(live_idp, "code", seen))
        phone.get_by_role("button", name="Continue").click()
        phone.get_by_label("New password").fill(NEW_PASSWORD)
        phone.get_by_role("button", name="Set the new password").click()
        phone.wait_for_load_state()
    finally:
        phone_context.close()

    office.goto(f"{live_idp.base}/account")
    office.wait_for_url(f"{live_idp.base}/login**")
    office.get_by_label("Email", exact=True).fill(live_idp.email)
    office.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    office.get_by_role("button", name="Sign in", exact=True).click()
    office.wait_for_url(f"{live_idp.base}/account")
