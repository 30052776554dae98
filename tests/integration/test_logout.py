"""RP-Initiated Logout 1.0 (CONFORMANCE A3): redirect only to a registered post-logout URI of the
client an ID token proves, otherwise ask or explain without leaving; a logout ends the session and
every token issued through it."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.support import (
    SESSION_COOKIE,
    IsolatedClient,
    OIDCBrowser,
    bearer,
    csrf_from,
    error_redirect,
    introspect,
    jwt_payload,
    oauth_error,
    query_of,
    refresh,
)

EMAIL = "alice@example.com"
PLRU = "https://rp.example/post_logout"


@pytest.fixture(autouse=True)
def _isolated_requests(app):
    app.test_client_class = IsolatedClient


@pytest.fixture
def signed_in(app, rp, user, browser):
    """A browser signed in through `rp`, and the tokens `rp` got."""
    result = browser.login_and_get_code(rp, EMAIL)
    response = browser.exchange(rp, result["code"])
    assert response.status_code == 200
    return browser, response.json


def _logout(browser, method: str = "GET", **params):
    params = {k: v for k, v in params.items() if v is not None}
    if method == "POST":
        return browser.client.post("/logout", data=params)
    return browser.client.get("/logout", query_string=params)


def _is_signed_in(browser, rp) -> bool:
    response = browser.authorize(rp, prompt="none")
    assert response.status_code == 302
    query = query_of(response.headers["Location"])
    assert "code" in query or query.get("error") == "login_required", query
    return "code" in query


def _assert_no_redirect(response, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers


def _assert_session_over(app, browser, rp, tokens: dict, old_cookie: str) -> None:
    error_redirect(browser.authorize(rp, prompt="none"), rp, "login_required")
    # The old cookie, replayed by a browser that kept it, is dead too: the session ended server-side.
    replay = OIDCBrowser(app.test_client())
    replay.client.set_cookie(SESSION_COOKIE, old_cookie)
    error_redirect(replay.authorize(rp, prompt="none"), rp, "login_required")
    http = app.test_client()
    assert http.get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    assert introspect(http, rp, tokens["access_token"]).json == {"active": False}
    oauth_error(refresh(http, rp, tokens["refresh_token"]), 400, "invalid_grant")


def _cookie(browser) -> str:
    cookie = browser.client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    return cookie.value


# -- valid requests ----------------------------------------------------------------------------


def test_logout_with_hint_ends_session_and_returns_exactly_to_the_registered_uri(app, rp, signed_in):
    browser, tokens = signed_in
    cases = [
        ("GET", {"post_logout_redirect_uri": PLRU, "state": "bye-1", "client_id": rp["client_id"]},
         PLRU + "?state=bye-1"),
        ("POST", {"post_logout_redirect_uri": PLRU, "state": "bye 2&x=y"}, PLRU + "?state=bye+2%26x%3Dy"),
        ("GET", {"post_logout_redirect_uri": PLRU}, PLRU),  # no state, none added (A3-03)
        ("GET", {"state": "s"}, None),  # no return address: our signed-out page (A3-06)
    ]
    for method, params, location in cases:
        old_cookie = _cookie(browser)
        response = _logout(browser, method, id_token_hint=tokens["id_token"], **params)
        if location is None:
            _assert_no_redirect(response, 200)
            assert "signed out" in response.get_data(as_text=True)
        else:
            assert response.status_code == 302 and response.headers["Location"] == location, (method, params)
        _assert_session_over(app, browser, rp, tokens, old_cookie)
        # Sign in again for the next case.
        result = browser.login_and_get_code(rp, EMAIL)
        tokens = browser.exchange(rp, result["code"]).json


# -- requests that must not redirect -----------------------------------------------------------


def _alg_none(token: str) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(jwt_payload(token))}."


def _foreign_signed(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    key = ECKey.generate_key("P-256", private=True)
    return jwt.encode({"alg": "ES256", "kid": header["kid"], "typ": "JWT"}, jwt_payload(token), key)


def test_logout_requests_that_must_not_redirect(app, rp, svc, signed_in):
    browser, tokens = signed_in
    other, _ = svc.clients.create(name="Door lock app", redirect_uris=["https://rp2.example/cb"],
                                  post_logout_redirect_uris=["https://rp2.example/bye"], first_party=True)
    hint = tokens["id_token"]
    cases = {
        "unregistered uri": {"id_token_hint": hint, "post_logout_redirect_uri": "https://evil.example/bye"},
        "query added": {"id_token_hint": hint, "post_logout_redirect_uri": PLRU + "?foo=bar"},
        "trailing slash": {"id_token_hint": hint, "post_logout_redirect_uri": PLRU + "/"},
        "no hint": {"post_logout_redirect_uri": PLRU, "state": "s"},
        "no hint, client_id": {"post_logout_redirect_uri": PLRU, "client_id": rp["client_id"]},
        "alg none hint": {"id_token_hint": _alg_none(hint), "post_logout_redirect_uri": PLRU},
        "foreign key hint": {"id_token_hint": _foreign_signed(hint), "post_logout_redirect_uri": PLRU},
        "garbage hint": {"id_token_hint": "a.b.c", "post_logout_redirect_uri": PLRU},
        "access token as hint": {"id_token_hint": tokens["access_token"], "post_logout_redirect_uri": PLRU},
        "client_id not the hint's aud": {"id_token_hint": hint, "client_id": other.client_id,
                                         "post_logout_redirect_uri": "https://rp2.example/bye"},
        "another client's uri": {"id_token_hint": hint, "post_logout_redirect_uri": "https://rp2.example/bye"},
        "unknown client_id": {"id_token_hint": hint, "client_id": "nope", "post_logout_redirect_uri": PLRU},
    }
    for case, params in cases.items():
        for method in ("GET", "POST"):
            response = _logout(browser, method, **params)
            assert response.status_code == 400 and "Location" not in response.headers, (case, method)
            # Signed in, the person is asked instead; nothing ended behind their back.
            assert 'action="/logout/confirm"' in response.get_data(as_text=True), case
    assert _is_signed_in(browser, rp)
    assert app.test_client().get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 200

    # Without a session (another tab logged out) a valid hint still proves the RP, and nothing else does.
    stranger = OIDCBrowser(app.test_client())
    for case, params in cases.items():
        _assert_no_redirect(_logout(stranger, **params))
    response = _logout(stranger, id_token_hint=hint, post_logout_redirect_uri=PLRU, state="x")
    assert response.status_code == 302 and response.headers["Location"] == PLRU + "?state=x"


def test_logout_without_proof_asks_for_confirmation(app, rp, svc, signed_in):
    browser, tokens = signed_in
    svc.accounts.create_user("bob@example.com", "correct horse battery staple", "Bob")
    bob = OIDCBrowser(app.test_client())
    bob_hint = bob.exchange(rp, bob.login_and_get_code(rp, "bob@example.com")["code"]).json["id_token"]
    # Only state, no parameters (A3-04/05), or a hint naming someone else: a bare GET /logout (an
    # <img> on any site) must not end the session, so the person is asked.
    for params in ({"state": "only-state"}, {}, {"id_token_hint": bob_hint, "post_logout_redirect_uri": PLRU}):
        response = _logout(browser, **params)
        _assert_no_redirect(response, 200)
        html = response.get_data(as_text=True)
        assert 'action="/logout/confirm"' in html and csrf_from(html), params
        assert _is_signed_in(browser, rp), params


# -- the confirmation form ---------------------------------------------------------------------


def test_confirm_needs_csrf_token_and_then_ends_the_session(app, rp, signed_in):
    browser, tokens = signed_in
    old_cookie = _cookie(browser)
    page = _logout(browser)
    token = csrf_from(page.get_data(as_text=True))

    for data in ({}, {"csrf_token": "forged"}):
        refused = browser.client.post("/logout/confirm", data=data)
        _assert_no_redirect(refused, 400)
        assert _is_signed_in(browser, rp)

    done = browser.client.post("/logout/confirm", data={"csrf_token": token})
    _assert_no_redirect(done, 200)
    assert "signed out" in done.get_data(as_text=True)
    _assert_session_over(app, browser, rp, tokens, old_cookie)
