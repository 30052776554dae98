"""Helpers for the second-factor and attempt-limit tests: people, phones and browsers.

Every request runs in its own application context (IsolatedClient), as in production, so one
"browser" never sees another's `g`; set-up goes through the services in a short context of its own.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pyotp
import pytest
import time_machine

from idp.storage.models import User
from tests.support import PASSWORD, IsolatedClient, OIDCBrowser, csrf_from, jwt_payload

EMAIL = "alice@example.com"
WRONG_CODE = "That code is not right. Check it and try again."
GENERIC_FAILURE = "Incorrect email or password."
STORE_DOWN = "The service is temporarily unavailable. Please try again in a moment."
UI_COOKIE = "idp_ui"  # Flask's signed cookie: CSRF secret and the id of a half-finished sign-in
SESSION_COOKIE = "idp_session"
DEVICE_COOKIE = "idp_device"
ACR_MFA = "urn:idp:acr:mfa"
ACR_TWO_STEP = "urn:idp:acr:2step"
ACR_1FA = "urn:idp:acr:1fa"


# -- set-up through the services --------------------------------------------------------------


def services_of(app):
    return app.extensions["idp"]


def create_user(app, email: str = EMAIL, phone: str | None = None, **attributes) -> str:
    with app.app_context():
        svc = services_of(app)
        user = svc.accounts.create_user(email, PASSWORD, "Alice", phone=phone)
        for name, value in attributes.items():
            setattr(user, name, value)
        svc.accounts.save(user)
        return user.id


def load_user(app, user_id: str) -> User:
    """Only for calls made inside the caller's own app context."""
    from idp.extensions import db

    return db.session.get(User, user_id)


def create_rp(app) -> dict:
    with app.app_context():
        client, secret = services_of(app).clients.create(
            name="Alarm panel app", redirect_uris=["https://rp.example/cb"], first_party=True)
        return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp.example/cb"}


class Phone:
    """An authenticator app. Each code comes from a later 30-s step than the one before (the
    clock moves on), because a step once accepted is refused for ever after (replay protection)."""

    def __init__(self, secret: str, clock):
        self.secret = secret
        self.clock = clock
        self.totp = pyotp.TOTP(secret)

    def next_code(self) -> str:
        self.clock.shift(30)
        return self.totp.now()

    def wrong_code(self) -> str:
        """A 6-digit code that matches none of the steps the drift window accepts now."""
        now = time.time()
        valid = {self.totp.at(now + offset) for offset in (-60, -30, 0, 30, 60)}
        candidate = int(self.totp.at(now))
        while f"{candidate:06d}" in valid:
            candidate = (candidate + 1) % 1_000_000
        return f"{candidate:06d}"


def enrol_totp(app, user_id: str, clock) -> Phone:
    """Enrol an authenticator app the way the service does it: a pending secret confirmed by a code."""
    with app.app_context():
        svc = services_of(app)
        user = load_user(app, user_id)
        enrolment_id, secret, _ = svc.factors.begin_totp_enrolment(user)
        assert svc.factors.confirm_totp_enrolment(user, enrolment_id, pyotp.TOTP(secret).now())
    return Phone(secret, clock)


@pytest.fixture
def clock():
    """Real time, moving on by itself, that a test can also shift forward."""
    with time_machine.travel(time.time(), tick=True) as traveller:
        yield traveller


# -- browsers ---------------------------------------------------------------------------------


def new_browser(app) -> IsolatedClient:
    app.test_client_class = IsolatedClient
    return app.test_client()


def ip(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def password_step(client, email: str = EMAIL, password: str = PASSWORD, next_url: str | None = None, **kwargs):
    page = client.get("/login" if next_url is None else f"/login?next={quote(next_url, safe='')}", **kwargs)
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    form_next = re.search(r'name="next" value="([^"]*)"', html).group(1)
    return client.post("/login", data={"csrf_token": csrf_from(html), "next": form_next, "username": email,
                                       "password": password}, **kwargs)


def to_second_factor(client, email: str = EMAIL, **kwargs):
    response = password_step(client, email, **kwargs)
    assert response.status_code == 303, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.headers["Location"] == "/login/2fa"
    return response


def second_factor_page(client, method: str | None = None, **kwargs):
    response = client.get("/login/2fa" + (f"?method={method}" if method else ""), **kwargs)
    assert response.status_code == 200, (response.status_code, response.headers.get("Location"))
    return response


def submit_code(client, code: str, method: str = "totp", csrf: str | None = None, **form):
    """POST the second-factor form. Keyword arguments starting with environ_/headers go to the request."""
    request_kwargs = {k: form.pop(k) for k in list(form) if k in ("environ_base", "headers")}
    if csrf is None:
        csrf = csrf_from(second_factor_page(client, method, **request_kwargs).get_data(as_text=True))
    return client.post("/login/2fa", data={"csrf_token": csrf, "method": method, "code": code, **form},
                       **request_kwargs)


def sign_in_with_totp(client, phone: Phone, **form):
    to_second_factor(client)
    response = submit_code(client, phone.next_code(), **form)
    assert response.status_code == 303, (response.status_code, response.get_data(as_text=True)[:500])
    return response


def is_signed_in(client) -> bool:
    response = client.get("/account")
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and response.headers["Location"].startswith("/login"), response.status_code
    return False


def sign_out(client) -> None:
    page = client.get("/logout")
    assert page.status_code == 200, page.status_code
    done = client.post("/logout/confirm", data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert done.status_code == 200
    assert not is_signed_in(client)


def error_text(response) -> str | None:
    match = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.get_data(as_text=True))
    return match.group(1) if match else None


def notice_text(response) -> str | None:
    match = re.search(r'<p class="notice" role="status">([^<]*)</p>', response.get_data(as_text=True))
    return match.group(1) if match else None


def copy_cookie(source, target, name: str) -> None:
    cookie = source.get_cookie(name)
    assert cookie is not None, f"no {name} cookie to copy"
    target.set_cookie(name, cookie.value)


def set_cookie_header(response, name: str) -> dict | None:
    """The Set-Cookie for `name`, as {"value": …, attribute (lowercase): value or True}."""
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        key, _, value = first.partition("=")
        if key == name:
            parsed = {"value": value}
            for attribute in attributes:
                attr, sep, attr_value = attribute.partition("=")
                parsed[attr.lower()] = attr_value if sep else True
            return parsed
    return None


# -- relying-app flows --------------------------------------------------------------------------


def id_token_claims(app, rp: dict, client, prove) -> dict:
    """Run a code flow on `client`; `prove(client, response)` answers the second-factor step and
    returns the response that leaves it (None when no second factor is asked). Returns the ID token claims."""
    browser = OIDCBrowser(client)
    response = browser.authorize(rp)
    assert response.status_code == 302 and "/login" in response.headers["Location"], response.status_code
    response = browser.sign_in(response.headers["Location"], EMAIL)
    assert response.status_code == 303, response.status_code
    if response.headers["Location"] == "/login/2fa":
        response = prove(client, response)
    result = browser.follow_to_redirect_uri(response, rp)
    tokens = browser.exchange(rp, result["code"])
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    return jwt_payload(tokens.json["id_token"])


SIX_DIGITS_LINE = re.compile(r"^[ \t]+(\d+)[ \t\r]*$", re.M)


def code_in_email(sink, message) -> str:
    text = sink.text_of(message)
    match = SIX_DIGITS_LINE.search(text)
    assert match, text
    return match.group(1)
