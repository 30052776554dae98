"""acr_values enforced: a password-only session is asked for the second factor (step-up), a
person without a possession factor gets unmet_authentication_requirements, and re-authentication
for sensitive changes needs the second factor too."""

from __future__ import annotations

import re
from urllib.parse import quote

from tests.integration.mfa_support import (
    ACR_1FA,
    ACR_MFA,
    EMAIL,
    clock,  # noqa: F401  (fixture)
    create_rp,
    create_user,
    enrol_totp,
    new_browser,
    password_step,
    sign_out,
    submit_code,
)
from tests.support import PASSWORD, OIDCBrowser, jwt_payload, query_of


def _trusted_password_session(app, phone):
    """A browser signed in with the password only, because it trusts the device."""
    client = new_browser(app)
    password_step(client)
    response = submit_code(client, phone.next_code(), trust_device="1", device_name="Laptop")
    assert response.status_code == 303
    sign_out(client)
    response = password_step(client)
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    return client


def _fill_sign_in_page(client, location: str):
    """Submit the sign-in page as served, hidden fields (next, acr) included."""
    html = client.get(location).get_data(as_text=True)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
    return client.post("/login", data={**hidden, "username": EMAIL, "password": PASSWORD})


def test_password_only_session_is_stepped_up_for_mfa(app, clock):  # noqa: F811
    user_id = create_user(app)
    phone = enrol_totp(app, user_id, clock)
    rp = create_rp(app)
    client = _trusted_password_session(app, phone)
    browser = OIDCBrowser(client)

    silent = browser.authorize(rp, acr_values=ACR_1FA, prompt="none")
    assert "code" in query_of(silent.headers["Location"]), "one factor is enough when the app asks for no more"
    assert jwt_payload(browser.exchange(rp, query_of(silent.headers["Location"])["code"]).json["id_token"])[
        "amr"] == ["pwd"]

    none = browser.authorize(rp, acr_values=ACR_MFA, prompt="none")
    assert query_of(none.headers["Location"])["error"] == "login_required"

    response = browser.authorize(rp, acr_values=ACR_MFA)
    assert response.status_code == 302 and "step_up=1" in response.headers["Location"]
    step = client.get(response.headers["Location"])
    assert step.status_code == 303 and step.headers["Location"] == "/login/2fa", "no password asked again"
    done = submit_code(client, phone.next_code())
    result = browser.follow_to_redirect_uri(done, rp)
    claims = jwt_payload(browser.exchange(rp, result["code"]).json["id_token"])
    assert claims["acr"] == ACR_MFA and claims["amr"] == ["pwd", "otp", "mfa"]


def test_person_without_possession_factor_gets_unmet_authentication_requirements(app):
    create_user(app, email_otp_enabled=False)
    rp = create_rp(app)
    client = new_browser(app)
    browser = OIDCBrowser(client)
    response = browser.authorize(rp, acr_values=ACR_MFA)
    signed_in = browser.sign_in(response.headers["Location"], EMAIL)
    assert signed_in.status_code == 303
    final = client.get(signed_in.headers["Location"])
    query = query_of(final.headers["Location"])
    assert query["error"] == "unmet_authentication_requirements" and query["state"] == browser.sent["state"]
    assert "code" not in query


def test_step_up_link_without_a_factor_leads_to_enrolment_and_proves_nothing(app):
    create_user(app)
    client = new_browser(app)
    password_step(client)
    page = client.get(f"/login?step_up=1&acr={quote(ACR_MFA)}&next=/account")
    assert page.status_code == 403 and "/account/security" in page.get_data(as_text=True)


def test_sensitive_change_after_trusted_device_sign_in_needs_the_second_factor(app, clock):  # noqa: F811
    user_id = create_user(app)
    phone = enrol_totp(app, user_id, clock)
    client = _trusted_password_session(app, phone)
    response = client.get("/account/security/totp")
    assert response.status_code == 302 and "reauth=1" in response.headers["Location"]
    assert "acr=" in response.headers["Location"]
    login = _fill_sign_in_page(client, response.headers["Location"])
    assert login.status_code == 303 and login.headers["Location"] == "/login/2fa", \
        "the trusted device does not skip the factor for a sensitive change"
    done = submit_code(client, phone.next_code())
    assert done.headers["Location"] == "/account/security/totp"
    assert client.get("/account/security/totp").status_code == 200
