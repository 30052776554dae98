"""Passkeys in a real browser: Chromium's virtual authenticator (over CDP) plays the phone or
laptop, static/webauthn.js does the ceremonies, a live `idp serve` checks them.

Contract (SPEC §4 "Sign in with a passkey", §6; CONFORMANCE C12, C13): a passkey registered on
/account/security signs the person in on /login with no password, as multi-factor; after a
password, the same key serves as the second factor.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

NAME = "Test laptop"


def virtual_authenticator(context, page) -> tuple[object, str]:
    """A platform authenticator that stores passkeys and verifies the user (as a fingerprint would)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})
    return cdp, added["authenticatorId"]


def sign_in_with_password(page, live_idp, next_url: str) -> None:
    page.goto(f"{live_idp.base}/login?next={next_url}")
    page.get_by_label("Email", exact=True).fill(live_idp.email)
    page.get_by_label("Password", exact=True).fill(live_idp.password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def register_passkey(page, live_idp) -> None:
    sign_in_with_password(page, live_idp, "/account/security")
    page.wait_for_url(f"{live_idp.base}/account/security")
    page.get_by_label("Name", exact=True).fill(NAME)
    page.get_by_role("button", name="Add a passkey or security key").click()
    page.locator("#passkeys td", has_text=NAME).wait_for()


def sign_out(page, live_idp) -> None:
    page.goto(f"{live_idp.base}/account")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    page.goto(f"{live_idp.base}/account")
    page.wait_for_url(f"{live_idp.base}/login**")


def open_session_amr(live_idp) -> list[str]:
    rows = live_idp.query("SELECT amr FROM sessions WHERE ended_at IS NULL ORDER BY created_at DESC")
    assert len(rows) == 1, rows
    return rows[0][0]


def test_register_a_passkey_then_sign_in_with_it_alone(live_idp, context):
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)
    register_passkey(page, live_idp)
    assert "Passkey" in page.locator("#passkeys tr", has_text=NAME).inner_text()
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(stored) == 1 and stored[0]["isResidentCredential"] and stored[0]["rpId"] == "localhost"

    sign_out(page, live_idp)
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(f"{live_idp.base}/account")
    assert page.locator("#email").inner_text() == live_idp.email
    assert page.get_by_label("Password").count() == 0
    # Chromium's virtual authenticator does not sync, so its passkey is a hardware-bound key.
    assert open_session_amr(live_idp) == ["hwk", "mfa"]
    # The counter moved and the key shows when it was last used.
    page.goto(f"{live_idp.base}/account/security")
    assert "last used" in page.locator("#passkeys tr", has_text=NAME).inner_text()


def test_the_passkey_is_the_second_factor_after_a_password(live_idp, context):
    page = context.new_page()
    virtual_authenticator(context, page)
    register_passkey(page, live_idp)
    sign_out(page, live_idp)

    sign_in_with_password(page, live_idp, "/account")
    page.wait_for_url(f"{live_idp.base}/login/2fa**")
    page.get_by_role("button", name="Use passkey or security key").click()
    page.wait_for_url(f"{live_idp.base}/account")
    assert page.locator("#email").inner_text() == live_idp.email
    assert open_session_amr(live_idp) == ["pwd", "hwk", "mfa"]


def test_a_failed_passkey_ceremony_shows_an_alert(live_idp, context):
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)
    # An authenticator that cannot verify the user cannot answer a passwordless request.
    cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False})
    page.goto(f"{live_idp.base}/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    alert = page.locator("#webauthn-error")
    alert.wait_for(state="visible", timeout=20_000)
    assert alert.get_attribute("role") == "alert"
    assert "cancelled or timed out" in alert.inner_text()
    assert page.url.startswith(f"{live_idp.base}/login")
