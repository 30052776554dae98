"""Token, UserInfo, revocation and introspection errors (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009,
RFC 7636, RFC 7662, RFC 9700 §2.1.1/§4.8.2/§4.14.2; CONFORMANCE A1-28/29/37 and B06-B13, B20-B25).

Related cases share one test because every app costs a migration and fresh signing keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from werkzeug.datastructures import MultiDict

from tests.support import (
    IsolatedClient,
    basic_auth,
    bearer,
    introspect,
    oauth_error,
    pkce_pair,
    refresh,
    revoke,
    token_request,
)

EMAIL = "alice@example.com"


@pytest.fixture(autouse=True)
def _isolated_requests(app):
    app.test_client_class = IsolatedClient


@pytest.fixture
def rp2(svc):
    """Another confidential client of the same person."""
    client, secret = svc.clients.create(name="Door lock app", redirect_uris=["https://rp2.example/cb"],
                                        first_party=True)
    return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp2.example/cb"}


@pytest.fixture
def http(app):
    """A plain HTTP caller with no cookies: the relying app's back end."""
    return app.test_client()


def _tokens(browser, rp: dict, **params) -> dict:
    result = browser.login_and_get_code(rp, EMAIL, **params)
    response = browser.exchange(rp, result["code"])
    assert response.status_code == 200, response.json
    return response.json


def _later(seconds: int):
    return time_machine.travel(datetime.now(timezone.utc) + timedelta(seconds=seconds), tick=True)


def _assert_dead(http, rp: dict, tokens: dict) -> None:
    """Access token refused by UserInfo and introspection; refresh token refused by the token endpoint."""
    assert http.get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    assert introspect(http, rp, tokens["access_token"]).json == {"active": False}
    if "refresh_token" in tokens:
        assert introspect(http, rp, tokens["refresh_token"]).json == {"active": False}
        oauth_error(refresh(http, rp, tokens["refresh_token"]), 400, "invalid_grant")


def _assert_alive(http, rp: dict, access_token: str) -> None:
    assert http.get("/userinfo", headers=bearer(access_token)).status_code == 200
    assert introspect(http, rp, access_token).json["active"] is True


# -- authorization codes -----------------------------------------------------------------------


def test_code_replay_fails_and_revokes_what_the_code_issued(app, rp, user, browser, http):
    result = browser.login_and_get_code(rp, EMAIL)
    first = browser.exchange(rp, result["code"])
    assert first.status_code == 200
    _assert_alive(http, rp, first.json["access_token"])
    oauth_error(browser.exchange(rp, result["code"]), 400, "invalid_grant")
    _assert_dead(http, rp, first.json)
    # Still dead half a minute later (A1-29).
    with _later(30):
        oauth_error(browser.exchange(rp, result["code"]), 400, "invalid_grant")


def test_code_bound_to_client_redirect_uri_lifetime_and_verifier(app, rp, rp2, public_rp, user, browser, http):
    # Another client, even a properly authenticated one, cannot redeem the code.
    result = browser.login_and_get_code(rp, EMAIL)
    other = {**rp2, "redirect_uri": rp["redirect_uri"]}
    oauth_error(browser.exchange(other, result["code"]), 400, "invalid_grant")

    for redirect_uri in ("https://rp.example/cb/", "https://rp2.example/cb", None):
        result = browser.login_and_get_code(rp, EMAIL)
        response = browser.exchange({**rp, "redirect_uri": redirect_uri}, result["code"])
        oauth_error(response, 400, "invalid_grant")

    result = browser.login_and_get_code(rp, EMAIL)
    with _later(app.extensions["idp"].settings.authorization_code_ttl + 1):
        oauth_error(browser.exchange(rp, result["code"]), 400, "invalid_grant")

    oauth_error(browser.exchange(rp, None), 400, "invalid_request")
    for code in ("garbage", "x" * 300):
        oauth_error(browser.exchange(rp, code), 400, "invalid_grant")

    # PKCE (B06, B08): the verifier must be present, well-formed and match.
    cases = [
        (rp, None, "invalid_request"),  # challenge sent, no verifier (B06)
        (rp, pkce_pair()[0], "invalid_grant"),  # well-formed but wrong
        (rp, "short", "invalid_request"),  # malformed (RFC 7636 §4.1: 43 to 128 characters)
        (rp, "a" * 129, "invalid_request"),
        (public_rp, None, "invalid_request"),
        (public_rp, pkce_pair()[0], "invalid_grant"),
    ]
    for client, verifier, error in cases:
        result = browser.login_and_get_code(client, EMAIL)
        auth = "basic" if client["client_secret"] else "none"
        response = browser.exchange(client, result["code"], auth=auth, code_verifier=verifier)
        oauth_error(response, 400, error)
        # A failed attempt burns the code: the right verifier no longer helps.
        assert browser.exchange(client, result["code"], auth=auth).status_code == 400

    # RFC 9700 §4.8.2: a code issued without a challenge refuses any verifier (PKCE downgrade, B07).
    result = browser.login_and_get_code(rp, EMAIL, code_challenge=None, code_challenge_method=None)
    oauth_error(browser.exchange(rp, result["code"], code_verifier=pkce_pair()[0]), 400, "invalid_request")
    result = browser.login_and_get_code(rp, EMAIL, code_challenge=None, code_challenge_method=None)
    assert browser.exchange(rp, result["code"], code_verifier=None).status_code == 200


# -- refresh tokens ----------------------------------------------------------------------------


def test_refresh_token_reuse_client_and_scope(app, rp, rp2, user, browser, http):
    tokens = _tokens(browser, rp)
    second = refresh(http, rp, tokens["refresh_token"])
    assert second.status_code == 200 and second.json["refresh_token"] != tokens["refresh_token"]
    third = refresh(http, rp, second.json["refresh_token"])
    assert third.status_code == 200
    _assert_alive(http, rp, third.json["access_token"])

    oauth_error(refresh(http, rp, tokens["refresh_token"]), 400, "invalid_grant")
    _assert_dead(http, rp, third.json)  # the newest of the family too (B12)
    _assert_dead(http, rp, second.json)

    # Bound to its client and to the granted scope, which may only shrink (B13).
    tokens = _tokens(browser, rp, scope="openid profile email")
    oauth_error(refresh(http, rp2, tokens["refresh_token"]), 400, "invalid_grant")
    for scope in ("openid profile email phone", "openid offline_access", "admin", ""):
        oauth_error(refresh(http, rp, tokens["refresh_token"], scope=scope), 400, "invalid_scope")
    narrower = refresh(http, rp, tokens["refresh_token"], scope="openid email")
    assert narrower.status_code == 200, narrower.json
    assert narrower.json["scope"] == "openid email"
    assert "name" not in http.get("/userinfo", headers=bearer(narrower.json["access_token"])).json
    oauth_error(refresh(http, rp, "garbage"), 400, "invalid_grant")
    oauth_error(refresh(http, rp, None), 400, "invalid_request")


# -- client authentication and malformed requests (B11, B20, B21, B22) -------------------------


def test_bad_token_requests_leave_the_code_unused(app, rp, user, browser, http):
    auth = basic_auth(rp["client_id"], rp["client_secret"])
    result = browser.login_and_get_code(rp, EMAIL)
    data = {"grant_type": "authorization_code", "code": result["code"], "redirect_uri": rp["redirect_uri"],
            "code_verifier": browser.verifier}
    unauthenticated = {
        "wrong secret (basic)": http.post("/token", data=data, headers=basic_auth(rp["client_id"], "wrong")),
        "wrong secret (post)": http.post("/token", data={**data, "client_id": rp["client_id"],
                                                         "client_secret": "wrong"}),
        "no credentials": http.post("/token", data=data),
        "client_id only": http.post("/token", data={**data, "client_id": rp["client_id"]}),
        "unknown client": http.post("/token", data=data, headers=basic_auth("no-such-client", "secret")),
    }
    for case, response in unauthenticated.items():
        body = oauth_error(response, 401, "invalid_client")
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic "), (case, body)

    password = {**data, "grant_type": "password", "username": EMAIL, "password": "x"}
    oauth_error(http.post("/token", data=password, headers=auth), 400, "unsupported_grant_type")
    # The refused grant type is never echoed with characters an error_description may not carry.
    oauth_error(http.post("/token", data={"grant_type": 'pass"word\\\u00e9'}, headers=auth), 400,
                "unsupported_grant_type")
    no_grant_type = {k: v for k, v in data.items() if k != "grant_type"}
    oauth_error(http.post("/token", data=no_grant_type, headers=auth), 400, "invalid_request")
    repeated = MultiDict(list(data.items()) + [("code", result["code"])])
    oauth_error(http.post("/token", data=repeated, headers=auth), 400, "invalid_request")
    oauth_error(http.post("/token", json=data, headers=auth), 400, "invalid_request")
    oauth_error(http.post("/token?code=" + result["code"], data=data, headers=auth), 400, "invalid_request")

    # None of that consumed the code, and client_secret_post works as well as basic.
    response = browser.exchange(rp, result["code"], auth="post")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"


# -- UserInfo (B23, A1-05..07) -----------------------------------------------------------------


def _bearer_error(response) -> str | None:
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True)[:200])
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer "), challenge
    return challenge.split('error="', 1)[1].split('"', 1)[0] if 'error="' in challenge else None


def test_userinfo_token_errors(app, rp, user, browser, http):
    tokens = _tokens(browser, rp)
    no_token = http.get("/userinfo")
    assert _bearer_error(no_token) is None and "error" not in no_token.json  # RFC 6750 §3.1
    assert _bearer_error(http.get("/userinfo", headers={"Authorization": "Basic abc"})) is None
    for token in ("garbage", "a.b.c", tokens["id_token"], tokens["refresh_token"], tokens["access_token"] + "x"):
        assert _bearer_error(http.get("/userinfo", headers=bearer(token))) == "invalid_token", token

    # Header, POST header and POST body all work (A1-05..07), but not two at once.
    assert http.get("/userinfo", headers=bearer(tokens["access_token"])).json["sub"] == user.id
    assert http.post("/userinfo", headers=bearer(tokens["access_token"])).json["sub"] == user.id
    assert http.post("/userinfo", data={"access_token": tokens["access_token"]}).json["sub"] == user.id
    both = http.post("/userinfo", data={"access_token": tokens["access_token"]}, headers=bearer(tokens["access_token"]))
    assert both.status_code == 400

    with _later(app.extensions["idp"].settings.access_token_ttl + 1):
        assert _bearer_error(http.get("/userinfo", headers=bearer(tokens["access_token"]))) == "invalid_token"


# -- revocation and introspection (B24, B25) -----------------------------------------------------


def test_revocation_and_introspection(app, rp, rp2, public_rp, user, browser, http):
    tokens = _tokens(browser, rp)
    for token in ("garbage", "a.b.c", ""):
        response = revoke(http, rp, token)
        assert response.status_code == 200, (token, response.json)
    assert revoke(http, rp, "garbage", token_type_hint="refresh_token").status_code == 200

    # Another client's token: refused, and left alone.
    refused = revoke(http, rp2, tokens["access_token"])
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    assert revoke(http, rp2, tokens["refresh_token"]).status_code == 400
    _assert_alive(http, rp, tokens["access_token"])
    assert refresh(http, rp, tokens["refresh_token"]).status_code == 200

    # A wrong or unknown hint still finds the token (RFC 7009 §2.1).
    assert revoke(http, rp, "garbage", token_type_hint="id_token").status_code == 200
    response = revoke(http, rp, tokens["access_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert _bearer_error(http.get("/userinfo", headers=bearer(tokens["access_token"]))) == "invalid_token"
    assert introspect(http, rp, tokens["access_token"]).json == {"active": False}

    oauth_error(http.post("/revoke", data={"token": "garbage"}), 401, "invalid_client")
    oauth_error(revoke(http, {**rp, "client_secret": "wrong"}, "garbage"), 401, "invalid_client")

    # Revoking a refresh token ends its grant, access tokens included (RFC 7009 §2.1).
    tokens = _tokens(browser, rp)
    assert revoke(http, rp, tokens["refresh_token"], token_type_hint="no-such-type").status_code == 200
    _assert_dead(http, rp, tokens)

    # Introspection needs an authenticated confidential client and shows it only its own tokens.
    tokens = _tokens(browser, rp)
    active = introspect(http, rp, tokens["access_token"])
    assert active.status_code == 200 and active.json["active"] is True
    assert active.headers["Cache-Control"] == "no-store"

    oauth_error(http.post("/introspect", data={"token": tokens["access_token"]}), 401, "invalid_client")
    oauth_error(introspect(http, {**rp, "client_secret": "wrong"}, tokens["access_token"]), 401, "invalid_client")
    # Public clients have nothing to authenticate with, so they cannot introspect.
    oauth_error(introspect(http, public_rp, tokens["access_token"]), 401, "invalid_client")

    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = introspect(http, rp2, token)
        assert response.status_code == 200 and response.json == {"active": False}, "another client's token"
    for token in ("garbage", "a.b.c", tokens["id_token"]):
        response = introspect(http, rp, token)
        assert response.status_code == 200 and response.json == {"active": False}, token
    for hint in ("refresh_token", "no-such-type"):
        assert introspect(http, rp, tokens["access_token"], token_type_hint=hint).json["active"] is True, hint
    oauth_error(token_request(http, rp, {}, path="/introspect"), 400, "invalid_request")
    oauth_error(token_request(http, rp, {}, path="/revoke"), 400, "invalid_request")


# -- client credentials ------------------------------------------------------------------------


def test_client_credentials_errors(app, svc, rp, http):
    oauth_error(token_request(http, rp, {"grant_type": "client_credentials"}), 400, "unauthorized_client")
    client, secret = svc.clients.create(name="Monitoring station", grant_types=["client_credentials"],
                                        scope="admin")
    station = {"client_id": client.client_id, "client_secret": secret}
    for scope in ("openid", "admin sessions", "profile", "nonsense"):
        oauth_error(token_request(http, station, {"grant_type": "client_credentials", "scope": scope}), 400,
                    "invalid_scope")
    oauth_error(token_request(http, {**station, "client_secret": "wrong"}, {"grant_type": "client_credentials"}),
                401, "invalid_client")
    issued = token_request(http, station, {"grant_type": "client_credentials", "scope": "admin"})
    assert issued.status_code == 200
    # A token with no person behind it has no UserInfo.
    assert _bearer_error(http.get("/userinfo", headers=bearer(issued.json["access_token"]))) == "invalid_token"
