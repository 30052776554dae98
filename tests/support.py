"""Test helpers: a browser-like driver over Flask's test client, PKCE pairs, token checks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from flask.testing import FlaskClient

PASSWORD = "correct horse battery staple"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def basic_auth(client_id: str, secret: str) -> dict:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class OIDCBrowser:
    """Follows the authorization flow the way a browser would, through the hosted pages."""

    def __init__(self, client):
        self.client = client

    def authorize(self, rp: dict, method: str = "GET", **params):
        verifier, challenge = pkce_pair()
        values = {
            "response_type": "code",
            "client_id": rp["client_id"],
            "redirect_uri": rp["redirect_uri"],
            "scope": "openid profile email",
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        values.update(params)
        values = {k: v for k, v in values.items() if v is not None}
        self.verifier = verifier
        self.sent = values
        if method == "POST":
            return self.client.post("/authorize", data=values)
        return self.client.get("/authorize?" + urlencode(values))

    def sign_in(self, login_location: str, email: str, password: str = PASSWORD):
        page = self.client.get(login_location)
        assert page.status_code == 200, page.status_code
        html = page.get_data(as_text=True)
        next_url = re.search(r'name="next" value="([^"]*)"', html).group(1)
        return self.client.post(
            "/login",
            data={"csrf_token": csrf_from(html), "next": next_url, "username": email, "password": password},
        )

    def follow_to_redirect_uri(self, response, rp: dict, max_hops: int = 6):
        """Follow our own redirects until the browser would leave for the relying app."""
        for _ in range(max_hops):
            assert response.status_code in (302, 303), (response.status_code, response.get_data(as_text=True)[:500])
            location = response.headers["Location"]
            if location.startswith(rp["redirect_uri"].split("?")[0]):
                return query_of(location)
            response = self.client.get(location)
        raise AssertionError("too many redirects")

    def login_and_get_code(self, rp: dict, email: str, password: str = PASSWORD, **params) -> dict:
        response = self.authorize(rp, **params)
        if response.status_code == 302 and "/login" in response.headers["Location"]:
            response = self.sign_in(response.headers["Location"], email, password)
        return self.follow_to_redirect_uri(response, rp)

    def exchange(self, rp: dict, code: str, auth: str = "basic", **extra):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp["redirect_uri"],
                "code_verifier": self.verifier}
        data.update(extra)
        return token_request(self.client, rp, data, auth)


def token_request(client, rp: dict, data: dict, auth: str = "basic", path: str = "/token"):
    data = {k: v for k, v in data.items() if v is not None}
    headers = {}
    if auth == "basic" and rp.get("client_secret"):
        headers = basic_auth(rp["client_id"], rp["client_secret"])
    elif auth == "post" and rp.get("client_secret"):
        data = {**data, "client_id": rp["client_id"], "client_secret": rp["client_secret"]}
    else:
        data = {**data, "client_id": rp["client_id"]}
    return client.post(path, data=data, headers=headers)


# -- helpers for the negative protocol tests ------------------------------------------------

ISSUER = "http://localhost:5000"
SESSION_COOKIE = "idp_session"  # the issuer is plain http in tests, so no __Host- prefix
# RFC 6749 §4.1.2.1 and §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E only.
LEGAL_ERROR_TEXT = re.compile(r"^[\x20-\x21\x23-\x5B\x5D-\x7E]*$")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def jwt_payload(token: str) -> dict:
    """The claims of a compact JWT, unverified (the happy-path tests check signatures)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assert_error_page(response, case=None) -> None:
    """Our own error page: the redirect target is not trusted, so the browser stays here."""
    assert response.status_code == 400, (case, response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers, case
    assert response.mimetype == "text/html", case


def error_redirect(response, rp: dict, error: str, case=None) -> dict:
    """An RFC 6749 §4.1.2.1 error sent back to the registered redirect URI, with RFC 9207 `iss`."""
    assert response.status_code == 302, (case, response.status_code, response.get_data(as_text=True)[:300])
    location = response.headers["Location"]
    assert location.startswith(rp["redirect_uri"] + "?"), (case, location)
    query = query_of(location)
    assert query.get("error") == error, (case, query)
    assert query.get("iss") == ISSUER, (case, query)
    assert "code" not in query, case
    assert LEGAL_ERROR_TEXT.match(query.get("error_description", "")), (case, query)
    return query


def oauth_error(response, status: int, error: str) -> dict:
    """A JSON token-endpoint style error (RFC 6749 §5.2) that must never be cached."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/json"
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.json
    assert body["error"] == error, body
    assert LEGAL_ERROR_TEXT.match(body.get("error_description", "")), body
    return body


def introspect(client, rp: dict, token: str, **extra):
    return token_request(client, rp, {"token": token, **extra}, path="/introspect")


def revoke(client, rp: dict, token: str, **extra):
    return token_request(client, rp, {"token": token, **extra}, path="/revoke")


def refresh(client, rp: dict, refresh_token: str, auth: str = "basic", **extra):
    return token_request(client, rp, {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}, auth)


class IsolatedClient(FlaskClient):
    """A test client whose every request gets its own application context, as in production.

    Fixtures such as `svc` keep an app context open for the whole test, and Flask reuses an active
    context for requests: `g` would then carry the CSRF token and the cached current session from
    one request (or one browser) to the next. Use with `app.test_client_class = IsolatedClient`.
    """

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)
