"""The whole code flow on both backends: they must behave the same."""

from __future__ import annotations

import json

from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp.extensions import db
from idp.oidc.claims import half_hash
from idp.storage.models import SessionClient
from tests.support import query_of, token_request


def _verify(app, token: str) -> tuple[dict, dict]:
    keys = KeySet.import_key_set(json.loads(app.test_client().get("/jwks").data))
    decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    return decoded.header, decoded.claims


def test_sign_in_code_exchange_userinfo_refresh_revoke(app, rp, user, browser):
    result = browser.login_and_get_code(rp, "alice@example.com")
    assert result["state"] == browser.sent["state"]
    assert result["iss"] == "http://localhost:5000"
    assert len(result["code"]) >= 40

    response = browser.exchange(rp, result["code"])
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    tokens = response.json
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0 and tokens["refresh_token"]

    header, claims = _verify(app, tokens["id_token"])
    assert header["alg"] == "ES256" and header["kid"]
    assert claims["iss"] == "http://localhost:5000"
    assert claims["aud"] == rp["client_id"] and claims["sub"] == user.id
    assert claims["nonce"] == browser.sent["nonce"]
    assert claims["amr"] == ["pwd"] and claims["acr"] == "urn:idp:acr:1fa"
    assert claims["sid"] and claims["auth_time"] <= claims["iat"] < claims["exp"]
    assert claims["at_hash"] == half_hash(tokens["access_token"], "ES256")
    assert "email" not in claims, "profile data belongs in UserInfo, not the ID token"

    at_header, at_claims = _verify(app, tokens["access_token"])
    assert at_header["typ"] == "at+jwt" and at_claims["sid"] == claims["sid"]

    userinfo = app.test_client().get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    assert userinfo.json == {"sub": user.id, "name": "Alice", "updated_at": userinfo.json["updated_at"],
                             "email": "alice@example.com", "email_verified": True}

    refreshed = token_request(app.test_client(), rp, {"grant_type": "refresh_token",
                                                      "refresh_token": tokens["refresh_token"]}, auth="post")
    assert refreshed.status_code == 200, refreshed.json
    assert refreshed.json["refresh_token"] != tokens["refresh_token"]

    introspect = token_request(app.test_client(), rp, {"token": refreshed.json["access_token"]},
                               path="/introspect")
    assert introspect.json["active"] is True and introspect.json["sub"] == user.id
    assert introspect.json["client_id"] == rp["client_id"] and introspect.json["sid"] == claims["sid"]

    revoked = token_request(app.test_client(), rp, {"token": refreshed.json["refresh_token"],
                                                    "token_type_hint": "refresh_token"}, path="/revoke")
    assert revoked.status_code == 200
    after = token_request(app.test_client(), rp, {"token": refreshed.json["access_token"]}, path="/introspect")
    assert after.json == {"active": False}, "revoking the refresh token ends its grant's access tokens"


def test_public_client_with_pkce_and_no_secret(app, public_rp, user, browser):
    result = browser.login_and_get_code(public_rp, "alice@example.com")
    response = browser.exchange(public_rp, result["code"], auth="none")
    assert response.status_code == 200, response.json
    assert "id_token" in response.json


def test_existing_session_gives_code_without_ui_and_same_auth_time(app, rp, user, browser):
    first = browser.login_and_get_code(rp, "alice@example.com")
    first_claims = _verify(app, browser.exchange(rp, first["code"]).json["id_token"])[1]
    second = browser.authorize(rp, prompt="none")
    assert second.status_code == 302
    code = query_of(second.headers["Location"])["code"]
    claims = _verify(app, browser.exchange(rp, code).json["id_token"])[1]
    assert claims["sub"] == first_claims["sub"] and claims["auth_time"] == first_claims["auth_time"]
    assert claims["sid"] == first_claims["sid"]
    # The app is linked to the session once, however many codes it exchanges there.
    with app.app_context():
        links = db.session.scalars(select(SessionClient).where(SessionClient.session_id == claims["sid"])).all()
        assert [link.client_id for link in links] == [rp["client_id"]]
        assert links[0].last_seen_at >= links[0].first_seen_at


def _pending_request(login_redirect) -> str:
    """The /authorize/continue/<id> path the login page was sent to come back to."""
    assert login_redirect.status_code == 302, login_redirect.status_code
    next_url = query_of(login_redirect.headers["Location"])["next"]
    assert next_url.startswith("/authorize/continue/"), next_url
    return next_url


def test_the_last_sign_in_step_answers_the_authorization_request_itself(app, rp, user, browser):
    login = browser.authorize(rp)
    continue_url = _pending_request(login)
    signed_in = browser.sign_in(login.headers["Location"], "alice@example.com")
    # Straight back to the app, 303 as the answer to a form post; no hop through /authorize/continue.
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"].startswith(rp["redirect_uri"] + "?")
    result = query_of(signed_in.headers["Location"])
    assert result["state"] == browser.sent["state"] and result["iss"] == "http://localhost:5000"
    claims = _verify(app, browser.exchange(rp, result["code"]).json["id_token"])[1]
    assert claims["nonce"] == browser.sent["nonce"] and claims["amr"] == ["pwd"]
    # The request was answered once: its continuation is gone and gives no second code.
    again = browser.client.get(continue_url)
    assert again.status_code == 400 and "Location" not in again.headers


def test_a_request_the_sign_in_cannot_answer_is_answered_at_its_continuation(app, rp, user, browser, svc):
    # Two factors required of an account with none: the sign-in stands, the request fails there.
    login = browser.authorize(rp, acr_values="urn:idp:acr:mfa")
    continue_url = _pending_request(login)
    signed_in = browser.sign_in(login.headers["Location"], "alice@example.com")
    assert (signed_in.status_code, signed_in.headers["Location"]) == (303, continue_url)
    answered = browser.client.get(continue_url)
    assert answered.status_code == 302 and answered.headers["Location"].startswith(rp["redirect_uri"] + "?")
    assert query_of(answered.headers["Location"])["error"] == "unmet_authentication_requirements"

    # A request that expired while the person signed in: the continuation says so.
    login = browser.authorize(rp, prompt="login")
    continue_url = _pending_request(login)
    svc.store.delete("authz:" + continue_url.rsplit("/", 1)[1])
    signed_in = browser.sign_in(login.headers["Location"], "alice@example.com")
    assert (signed_in.status_code, signed_in.headers["Location"]) == (303, continue_url)
    expired = browser.client.get(continue_url)
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)


def test_client_credentials_issues_jwt_access_token(app, svc):
    client, secret = svc.clients.create(name="Monitoring station", grant_types=["client_credentials"],
                                        scope="admin")
    rp = {"client_id": client.client_id, "client_secret": secret}
    response = token_request(app.test_client(), rp, {"grant_type": "client_credentials"})
    assert response.status_code == 200, response.json
    assert "refresh_token" not in response.json and response.json["scope"] == "admin"
    _, claims = _verify(app, response.json["access_token"])
    assert claims["sub"] == client.client_id and claims["client_id"] == client.client_id
    introspect = token_request(app.test_client(), rp, {"token": response.json["access_token"]}, path="/introspect")
    assert introspect.json["active"] is True
