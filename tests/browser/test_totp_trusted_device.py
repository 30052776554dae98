"""Password + authenticator app through a relying app in a real browser; a trusted browser skips
the code next time, and removing the device brings the code back (SPEC §6.1, §6.4)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests

pytestmark = pytest.mark.browser

CALLBACK = "http://127.0.0.1:8766/callback"


def _payload(jwt: str) -> dict:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class RelyingApp:
    """Plays the app: builds the authorization URL, catches the callback in the browser, redeems the code."""

    def __init__(self, live_idp, page):
        self.live_idp = live_idp
        self.client = live_idp.deployment.cli("clients", "create", "--name", "Alarm app", "--redirect-uri",
                                              CALLBACK, "--first-party")
        page.route(f"{CALLBACK}*", lambda route: route.fulfill(status=200, body="signed in", content_type="text/plain"))

    def authorization_url(self) -> str:
        self.verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        self.state = secrets.token_urlsafe(8)
        return f"{self.live_idp.base}/authorize?" + urlencode({
            "response_type": "code", "client_id": self.client["client_id"], "redirect_uri": CALLBACK,
            "scope": "openid email", "state": self.state, "code_challenge": challenge,
            "code_challenge_method": "S256",
        })

    def redeem(self, callback_url: str) -> dict:
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
        assert query["state"] == self.state
        response = requests.post(f"{self.live_idp.base}/token", timeout=10, data={
            "grant_type": "authorization_code", "code": query["code"], "redirect_uri": CALLBACK,
            "code_verifier": self.verifier,
        }, auth=(self.client["client_id"], self.client["client_secret"]))
        assert response.status_code == 200, response.text
        return _payload(response.json()["id_token"])


def _password(page, live_idp):
    page.get_by_label("Email", exact=True).fill(live_idp.email)
    page.get_by_label("Password", exact=True).fill(live_idp.password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _enrol_totp(page, live_idp) -> pyotp.TOTP:
    page.goto(f"{live_idp.base}/login?next=/account/security/totp")
    _password(page, live_idp)
    secret = page.locator("#totp-secret").inner_text().strip()
    assert page.locator(".qr svg").count() == 1, "the QR code is drawn inline"
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_url(f"{live_idp.base}/account/security")
    return totp


def _sign_out(page, live_idp):
    page.goto(f"{live_idp.base}/account")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()


def _next_code(totp: pyotp.TOTP, used: set[str]) -> str:
    """A code not accepted before: each code works once, so wait for the next step if needed."""
    for _ in range(40):
        for offset in (0, 30):
            code = totp.at(time.time() + offset)
            if code not in used:
                used.add(code)
                return code
        time.sleep(1)
    raise AssertionError("no fresh TOTP code")


def test_totp_sign_in_then_trusted_device_skips_the_code_until_removed(context, live_idp):
    page = context.new_page()
    app = RelyingApp(live_idp, page)
    totp = _enrol_totp(page, live_idp)
    used = {totp.now()}
    _sign_out(page, live_idp)

    page.goto(app.authorization_url())
    _password(page, live_idp)
    page.wait_for_url(f"{live_idp.base}/login/2fa**")
    page.get_by_label("Verification code").fill(_next_code(totp, used))
    page.get_by_label("Trust this device").check()
    page.get_by_label("Device name").fill("Office laptop")
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{CALLBACK}**")
    claims = app.redeem(page.url)
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "urn:idp:acr:mfa"

    _sign_out(page, live_idp)
    page.goto(app.authorization_url())
    _password(page, live_idp)
    page.wait_for_url(f"{CALLBACK}**")
    claims = app.redeem(page.url)
    assert claims["amr"] == ["pwd"], "a trusted-device skip claims no second factor"

    page.goto(f"{live_idp.base}/account/devices")
    assert page.get_by_label("Name (this browser)").input_value() == "Office laptop"
    page.get_by_role("button", name="Remove").click()
    page.get_by_text("No trusted devices.").wait_for()

    _sign_out(page, live_idp)
    page.goto(app.authorization_url())
    _password(page, live_idp)
    page.wait_for_url(f"{live_idp.base}/login/2fa**")
    page.get_by_label("Verification code").fill(_next_code(totp, used))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{CALLBACK}**")
    assert app.redeem(page.url)["amr"] == ["pwd", "otp", "mfa"]
