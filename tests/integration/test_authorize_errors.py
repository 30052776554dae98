"""Authorization-endpoint errors (RFC 6749 §4.1.2.1, RFC 9700 §2.1 and §4.11.2, OIDC Core §3.1.2.6,
CONFORMANCE A1 and B01/B04/B08/B11/B15/B22): an untrusted client or redirect URI gets our own
error page and never a redirect; every other error goes back to the client with `state` and `iss`,
but only after the person has signed in, unless the request was silent (prompt=none)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
import time_machine

from tests.support import (
    ISSUER,
    IsolatedClient,
    LEGAL_ERROR_TEXT,
    OIDCBrowser,
    assert_error_page,
    csrf_from,
    error_redirect,
    jwt_payload,
    pkce_pair,
    query_of,
)

EMAIL = "alice@example.com"


def _values(rp: dict, **params) -> dict:
    _, challenge = pkce_pair()
    values = {
        "response_type": "code",
        "client_id": rp["client_id"],
        "redirect_uri": rp["redirect_uri"],
        "scope": "openid profile",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    values.update(params)
    return {k: v for k, v in values.items() if v is not None}


def _get(browser, rp: dict, extra: list[tuple[str, str]] = (), **params):
    """GET /authorize; `extra` pairs are appended as-is, so a parameter can be sent twice."""
    return browser.client.get("/authorize?" + urlencode(list(_values(rp, **params).items()) + list(extra)))


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith("/login?")


@pytest.fixture(autouse=True)
def _isolated_requests(app):
    app.test_client_class = IsolatedClient


@pytest.fixture
def signed_in(browser, rp, user):
    """A browser with a live session, so errors are not held back behind the sign-in page."""
    browser.login_and_get_code(rp, EMAIL)
    return browser


@pytest.fixture
def third_party(svc):
    client, secret = svc.clients.create(name="Insurance partner", redirect_uris=["https://partner.example/cb"],
                                        first_party=False)
    return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://partner.example/cb"}


# Each app costs a migration and fresh signing keys, so related cases share one test and one app;
# every assertion names its case.

# -- untrusted client or redirect URI: our page, never a redirect ------------------------------

MISMATCHED_REDIRECT_URIS = [
    "https://rp.example/cb/",  # trailing slash
    "https://rp.example/CB",  # case change in the path
    "https://RP.example/cb",  # case change in the host: still not the registered string
    "https://rp.example/cb/extra",  # extra path segment
    "https://rp.example/cb?x=1",  # added query
    "https://rp.example/cb%2F..%2Fevil",  # encoded slash
    "https://rp.example%2Fcb",
    "https://rp.example@evil.example/cb",  # userinfo trick
    "http://rp.example/cb",  # downgrade to http
    "https://rp.example:8443/cb",  # other port
    "https://rp.example:443/cb",  # the explicit default port is a different string too
    "https://rp.example/cbX7f3q9Zr",  # registered + random suffix (A1-30)
    "https://rp.example/cb#frag",
    "https://evil.example/cb",
    "",  # present but empty
    None,  # missing: the only registered URI is not assumed either
]


def test_untrusted_client_or_redirect_uri_gets_error_page_never_a_redirect(app, signed_in, rp):
    anonymous = OIDCBrowser(app.test_client())
    for client_id in (None, "", "no-such-client", "x" * 65):
        for browser in (anonymous, signed_in):
            assert_error_page(_get(browser, rp, client_id=client_id), client_id)
    for redirect_uri in MISMATCHED_REDIRECT_URIS:
        for browser in (anonymous, signed_in):
            assert_error_page(_get(browser, rp, redirect_uri=redirect_uri), redirect_uri)
    # Repeated, even as identical copies: which one is meant cannot be known (RFC 6749 §3.1).
    for name in ("client_id", "redirect_uri"):
        assert_error_page(_get(signed_in, rp, extra=[(name, rp[name])]))
    assert_error_page(signed_in.client.post("/authorize", data=_values(rp, redirect_uri="https://rp.example/cb/")))
    # A silent request with a bad redirect URI is no exception: nowhere is trusted to receive the error.
    assert_error_page(_get(anonymous, rp, prompt="none", redirect_uri="https://evil.example/cb"))


# -- errors returned to the client -------------------------------------------------------------


def test_malformed_request_is_returned_to_client_with_state_and_iss(signed_in, rp):
    for name, first, second in [("scope", "openid", "openid"), ("response_type", "code", "code"),
                                ("nonce", "n-456", "n2"), ("prompt", "login", "login"), ("max_age", "10", "10"),
                                ("code_challenge", pkce_pair()[1], pkce_pair()[1]), ("login_hint", "a", "b")]:
        response = _get(signed_in, rp, extra=[(name, second)], **{name: first})
        query = error_redirect(response, rp, "invalid_request", name)
        assert query["state"] == "st-123" and name in query["error_description"], name
    query = error_redirect(_get(signed_in, rp, extra=[("state", "other")]), rp, "invalid_request")
    assert "state" not in query, "neither copy of a repeated state can be trusted to echo"

    cases = [({"response_type": None}, "invalid_request")]
    cases += [({"response_type": t}, "unsupported_response_type")
              for t in ("token", "id_token token", "code id_token", "id_token", "none", "CODE")]
    cases += [({"request": "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9."}, "request_not_supported"),
              ({"request_uri": "https://rp.example/r.jwt"}, "request_uri_not_supported")]
    cases += [({"scope": s}, "invalid_scope")
              for s in ("openid sessions", "openid admin", "openid unknown-scope", None, "")]
    cases += [({"prompt": p}, "invalid_request") for p in ("sideways", "none consent", "none login")]
    cases += [({"max_age": m}, "invalid_request")
              for m in ("-1", "abc", "1.5", " 5", "5\n", "99999999999", "\u0661", "\u00b2")]
    cases += [({"response_mode": m}, "invalid_request") for m in ("fragment", "form_post")]
    cases += [({"claims": c}, "invalid_request") for c in ("{", "[]")]
    cases += [({"nonce": "n" * 5000}, "invalid_request")]
    for params, error in cases:
        query = error_redirect(_get(signed_in, rp, **params), rp, error, params)
        assert query["state"] == "st-123", params

    # Unknown names are echoed in the description: quotes, backslashes and non-ASCII must go.
    query = error_redirect(_get(signed_in, rp, scope='openid "quoted\\back\u00e9\u2028 \x7f'), rp, "invalid_scope")
    assert query["error_description"] and LEGAL_ERROR_TEXT.match(query["error_description"])


# -- PKCE (RFC 7636, RFC 9700 §2.1.1; CONFORMANCE B08) ------------------------------------------

BAD_PKCE = [
    ("valid", "plain"),  # plain adds nothing over no PKCE
    ("valid", None),  # the RFC 7636 default is plain, so a missing method is refused too
    ("valid", "S512"),
    ("valid", "s256"),
    (None, "S256"),  # method without challenge
    ("A" * 42, "S256"),  # too short
    ("A" * 44, "S256"),  # an S256 challenge is exactly 43 characters
    ("A" * 129, "S256"),  # too long
    ("A" * 42 + "=", "S256"),  # padding
    ("A" * 41 + "+/", "S256"),  # base64, not base64url
    ("A" * 42 + "!", "S256"),
    ("A" * 42 + "\u00e9", "S256"),
    ("A" * 43 + "\n", "S256"),
]


def test_bad_pkce_parameters_are_invalid_request(signed_in, rp, public_rp):
    for challenge, method in BAD_PKCE:
        if challenge == "valid":
            challenge = pkce_pair()[1]
        response = _get(signed_in, rp, code_challenge=challenge, code_challenge_method=method)
        query = error_redirect(response, rp, "invalid_request", (challenge, method))
        assert query["state"] == "st-123", (challenge, method)
    # Public clients must use PKCE; the same signed-in browser asks through the camera app.
    response = _get(signed_in, public_rp, code_challenge=None, code_challenge_method=None)
    assert error_redirect(response, public_rp, "invalid_request")["state"] == "st-123"


# -- form POST (OIDC Core §3.1.2.1) and unknown parameters (RFC 6749 §3.1) ----------------------


def test_post_request_behaves_like_get_and_unknown_parameters_are_ignored(app, rp, user, browser):
    result = browser.login_and_get_code(rp, EMAIL, method="POST")
    assert result["code"] and result["state"] == browser.sent["state"] and result["iss"] == ISSUER
    assert browser.exchange(rp, result["code"]).status_code == 200

    silent = browser.client.post("/authorize", data=_values(rp, prompt="none", extra="foobar"))
    assert silent.status_code == 302 and query_of(silent.headers["Location"])["code"]
    error = browser.client.post("/authorize", data=_values(rp, scope="openid sessions"))
    error_redirect(error, rp, "invalid_scope")

    response = _get(browser, rp, extra=[("extra", "foobar"), ("extra", "twice")], prompt="none")
    assert response.status_code == 302
    query = query_of(response.headers["Location"])
    assert query["code"] and query["state"] == "st-123" and query["iss"] == ISSUER


# -- B04: sign in first, then redirect (RFC 9700 §4.11.2) --------------------------------------

HELD_BACK = [
    ({"scope": "openid sessions"}, [], "invalid_scope"),
    ({"response_type": None}, [], "invalid_request"),
    ({"response_type": "token"}, [], "unsupported_response_type"),
    ({"max_age": "soon"}, [], "invalid_request"),
    ({}, [("scope", "openid")], "invalid_request"),  # a repetition must survive the sign-in detour
    ({"nonce": "n" * 5000}, [], "invalid_request"),  # and so must an oversized value
    ({"request_uri": "https://rp.example/r"}, [], "request_uri_not_supported"),
]


def test_anonymous_request_signs_in_before_any_redirect_unless_silent(app, rp, user):
    response = _get(OIDCBrowser(app.test_client()), rp)
    assert _is_login_redirect(response), response.headers.get("Location")

    # prompt=none promises no UI: the answer comes at once (A1-18), for a bad request too.
    silent = OIDCBrowser(app.test_client())
    for params, error in [({}, "login_required"), ({"prompt": "none login"}, "invalid_request"),
                          ({"scope": "openid sessions"}, "invalid_scope")]:
        query = error_redirect(_get(silent, rp, **{"prompt": "none", **params}), rp, error, params)
        assert query["state"] == "st-123", params

    for params, extra, error in HELD_BACK:
        browser = OIDCBrowser(app.test_client())
        response = _get(browser, rp, extra=extra, **params)
        assert _is_login_redirect(response), ("a registered redirect URI is no licence to bounce a visitor", error)
        signed = browser.sign_in(response.headers["Location"], EMAIL)
        assert signed.status_code == 303
        query = error_redirect(browser.client.get(signed.headers["Location"]), rp, error, params)
        assert query["state"] == "st-123", params


# -- re-authentication: prompt=login and max_age (A1-17, A1-20, A1-21) --------------------------


def _id_token_for(browser, rp, result: dict) -> dict:
    response = browser.exchange(rp, result["code"])
    assert response.status_code == 200, response.json
    return jwt_payload(response.json["id_token"])


def _later(seconds: int):
    return time_machine.travel(datetime.now(timezone.utc) + timedelta(seconds=seconds), tick=True)


def test_reauthentication_shows_login_page_and_moves_auth_time(app, rp, user, browser):
    previous = _id_token_for(browser, rp, browser.login_and_get_code(rp, EMAIL, max_age="15000"))
    with _later(3):
        # Within max_age: no login page and the same auth_time (A1-21); past it, silence fails.
        response = browser.authorize(rp, max_age="10000")
        assert response.status_code == 302 and response.headers["Location"].startswith(rp["redirect_uri"])
        assert _id_token_for(browser, rp, query_of(response.headers["Location"]))["auth_time"] == previous["auth_time"]
        error_redirect(_get(browser, rp, prompt="none", max_age="1"), rp, "login_required")
    for step, params in enumerate([{"prompt": "login"}, {"max_age": "1"}, {"max_age": "0"}], start=1):
        with _later(5 * step):
            response = browser.authorize(rp, **params)
            assert _is_login_redirect(response), (params, response.headers.get("Location"))
            # Skipping the sign-in page must not help: the continuation asks again.
            next_url = query_of(response.headers["Location"])["next"]
            assert _is_login_redirect(browser.client.get(next_url)), params
            signed = browser.sign_in(response.headers["Location"], EMAIL)
            claims = _id_token_for(browser, rp, browser.follow_to_redirect_uri(signed, rp))
        assert claims["sub"] == previous["sub"]
        assert claims["auth_time"] >= previous["auth_time"] + 5, params
        previous = claims


# -- consent for third-party clients -----------------------------------------------------------


def _consent_form(page) -> tuple[str, str]:
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    assert "Insurance partner" in html and 'value="deny"' in html
    return html.split('action="', 1)[1].split('"', 1)[0], csrf_from(html)


def test_third_party_consent_deny_allow_and_silent(app, rp, third_party, user, browser):
    # Anonymous: sign in first, then the consent page; its form needs the CSRF token.
    response = browser.authorize(third_party)
    assert _is_login_redirect(response)
    signed = browser.sign_in(response.headers["Location"], EMAIL)
    action, csrf = _consent_form(browser.client.get(signed.headers["Location"]))
    refused = browser.client.post(action, data={"decision": "allow"})
    assert refused.status_code == 400 and "Location" not in refused.headers, "consent needs its CSRF token"
    response = browser.client.post(action, data={"csrf_token": csrf, "decision": "deny"})
    query = error_redirect(response, third_party, "access_denied")
    assert query["state"] == browser.sent["state"]

    # Denying grants nothing, and signing in through a first-party app neither: silence fails.
    browser.login_and_get_code(rp, EMAIL)
    query = error_redirect(browser.authorize(third_party, prompt="none"), third_party, "consent_required")
    assert query["state"] == browser.sent["state"]

    action, csrf = _consent_form(browser.authorize(third_party))
    response = browser.client.post(action, data={"csrf_token": csrf, "decision": "allow"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith(third_party["redirect_uri"] + "?")
    query = query_of(response.headers["Location"])
    assert query["code"] and query["state"] == browser.sent["state"] and query["iss"] == ISSUER
    assert browser.exchange(third_party, query["code"]).status_code == 200
    again = browser.authorize(third_party, prompt="none")
    assert again.status_code == 302 and query_of(again.headers["Location"])["code"]
    # A scope beyond what was approved asks again.
    error_redirect(browser.authorize(third_party, prompt="none", scope="openid phone"), third_party,
                   "consent_required")
