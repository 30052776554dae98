"""A relying app completes a real OpenID Connect login against `idp serve` running as a process,
on PostgreSQL and Redis, with Authlib's OAuth client doing the protocol work."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urljoin

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.conftest import sign_in_form

pytestmark = pytest.mark.e2e

PASSWORD = "a long and memorable passphrase"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


def _browser_sign_in(authorization_url: str, email: str, password: str) -> str:
    """What a person's browser does: open the URL, fill the hosted form, return the callback URL."""
    browser = requests.Session()
    response = browser.get(authorization_url, allow_redirects=False, timeout=10)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    page = browser.get(urljoin(authorization_url, response.headers["Location"]), allow_redirects=False, timeout=10)
    form = sign_in_form(page.text, email, password)
    response = browser.post(page.url.split("?")[0], data=form, allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text[:300]
    for _ in range(5):
        location = response.headers["Location"]
        if location.startswith(REDIRECT_URI):
            return location
        response = browser.get(urljoin(page.url, location), allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303), response.text[:300]
    raise AssertionError("never reached the relying app")


def test_relying_app_signs_in_refreshes_and_revokes(deployment):
    deployment.cli("init")
    user = deployment.cli("users", "create", "--email", "owner@example.com", "--password", PASSWORD,
                          "--name", "Site Owner")
    registered = deployment.cli("clients", "create", "--name", "Alarm monitoring", "--redirect-uri", REDIRECT_URI,
                                "--first-party", "--scope", "openid profile email offline_access")
    issuer = deployment.start(workers=2)

    metadata = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()
    assert metadata["issuer"] == issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]

    app = OAuth2Session(
        registered["client_id"],
        registered["client_secret"],
        scope="openid profile email offline_access",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(12)
    url, state = app.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier,
                                              nonce=nonce)
    callback = _browser_sign_in(url, "owner@example.com", PASSWORD)

    token = app.fetch_token(metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    assert token["token_type"].lower() == "bearer" and token["refresh_token"]

    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=metadata["id_token_signing_alg_values_supported"])
    claims = CodeIDToken(decoded.claims, decoded.header, {"iss": {"essential": True, "value": issuer},
                                                          "aud": {"essential": True,
                                                                  "value": registered["client_id"]},
                                                          "nonce": {"value": nonce}},
                         {"nonce": nonce, "access_token": token["access_token"]})
    claims.validate(leeway=5)
    assert claims["sub"] == user["id"] and claims["amr"] == ["pwd"] and claims["sid"]

    userinfo = app.get(metadata["userinfo_endpoint"], timeout=5)
    assert userinfo.status_code == 200
    assert userinfo.json()["email"] == "owner@example.com" and userinfo.json()["sub"] == user["id"]

    old_refresh = token["refresh_token"]
    time.sleep(1)
    rotated = app.refresh_token(metadata["token_endpoint"], refresh_token=old_refresh)
    assert rotated["refresh_token"] != old_refresh

    revoked = app.revoke_token(metadata["revocation_endpoint"], rotated["refresh_token"],
                               token_type_hint="refresh_token")
    assert revoked.status_code == 200
    introspection = app.introspect_token(metadata["introspection_endpoint"], token=rotated["access_token"])
    assert introspection.json() == {"active": False}
    userinfo_after = app.get(metadata["userinfo_endpoint"], timeout=5)
    assert userinfo_after.status_code == 401

    reuse = requests.post(metadata["token_endpoint"], data={"grant_type": "refresh_token",
                                                              "refresh_token": old_refresh},
                          auth=(registered["client_id"], registered["client_secret"]), timeout=5)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"


def test_serve_refuses_several_workers_without_redis(deployment):
    import subprocess

    from tests.e2e.conftest import IDP

    env = {k: v for k, v in deployment.env.items() if k != "IDP_REDIS_URL"}
    done = subprocess.run([IDP, "serve", "--workers", "3", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "IDP_REDIS_URL" in done.stderr


def test_the_access_log_keeps_emailed_link_tokens_out(deployment):
    deployment.cli("init")
    issuer = deployment.start(workers=1)
    token = secrets.token_urlsafe(32)
    for path in (f"/invite/{token}", f"/unlock/{token}", f"/account/sessions/end-link/{token}",
                 f"/logout?id_token_hint={token}&state=s1"):
        requests.get(issuer + path, allow_redirects=False, timeout=5)
    log_file = deployment.tmp_path / f"serve-{deployment.port}.log"
    deadline = time.monotonic() + 10
    while "/logout?" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = log_file.read_text()
    assert token not in log
    for line in ("GET /invite/[redacted] HTTP/1.1", "GET /unlock/[redacted] HTTP/1.1",
                 "GET /account/sessions/end-link/[redacted] HTTP/1.1",
                 "GET /logout?id_token_hint=[redacted]&state=s1 HTTP/1.1"):
        assert "127.0.0.1 - - [" in log and f'"{line}" ' in log, log[-2000:]
