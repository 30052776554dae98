"""Helpers for the session, API and back-channel tests: relying apps, browsers with a real
User-Agent, code flows that hand back tokens, the OpenAPI response checker, and logout-token checks.

No app context is held open: every look at the database runs in a short context of its own (the
delivery thread and the requests write from other contexts, and a long-lived session would see
stale rows).
"""

from __future__ import annotations

import copy
import email
import json
import re
import time
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.extensions import db
from idp.storage.models import BrowserSession, LogoutDelivery
from tests.integration.mfa_support import EMAIL, new_browser, services_of
from tests.support import ISSUER, OIDCBrowser, basic_auth, jwt_payload, token_request

IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.4 Mobile/15E148 Safari/604.1")
LINUX_CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
                "Safari/537.36")
WINDOWS_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
IPHONE_DEVICE = {"model": "Apple iPhone", "os": "iOS 17.4", "browser": "Mobile Safari 17.4"}
LINUX_DEVICE = {"model": None, "os": "Linux", "browser": "Chrome 124.0"}
WINDOWS_DEVICE = {"model": None, "os": "Windows 10", "browser": "Firefox 125.0"}

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
PLRU = "https://rp.example/post_logout"


# -- relying apps and tokens ------------------------------------------------------------------------


def register_client(app, name: str = "Alarm panel app", scope: str = "openid sessions offline_access",
                    backchannel_logout_uri: str | None = None, redirect_uri: str = "https://rp.example/cb") -> dict:
    with app.app_context():
        client, secret = services_of(app).clients.create(
            name=name, redirect_uris=[redirect_uri], post_logout_redirect_uris=[PLRU], scope=scope,
            backchannel_logout_uri=backchannel_logout_uri, first_party=True)
        return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": redirect_uri,
                "scope": scope, "name": name}


def admin_client(app, name: str = "Monitoring station") -> dict:
    """A machine client with client_credentials and the admin scope; returns it with a fresh token."""
    with app.app_context():
        client, secret = services_of(app).clients.create(name=name, grant_types=["client_credentials"],
                                                         scope="admin")
        rp = {"client_id": client.client_id, "client_secret": secret}
    response = app.test_client().post("/token", data={"grant_type": "client_credentials"},
                                      headers=basic_auth(rp["client_id"], secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["scope"] == "admin"
    return {**rp, "token": response.json["access_token"]}


def browser_for(app, user_agent: str = LINUX_CHROME, address: str = "203.0.113.10"):
    """A browser (test client) that sends this User-Agent and comes from this address on every request."""
    client = new_browser(app)
    client.environ_base["HTTP_USER_AGENT"] = user_agent
    client.environ_base["REMOTE_ADDR"] = address
    return client


def code_flow(client, rp: dict, email_address: str = EMAIL, prove=None, **params) -> dict:
    """Sign in through `rp` on this browser (or reuse its session) and exchange the code.

    `prove(client)` answers a second-factor step and returns the response that leaves it.
    Returns the token response plus `sid`, `sub` and the `scope` granted."""
    oidc = OIDCBrowser(client)
    response = oidc.authorize(rp, scope=rp.get("scope", "openid"), **params)
    if response.status_code == 302 and "/login" in response.headers["Location"]:
        response = oidc.sign_in(response.headers["Location"], email_address)
        if response.status_code == 303 and response.headers["Location"] == "/login/2fa":
            assert prove is not None, "this account asks for a second factor"
            response = prove(client)
    result = oidc.follow_to_redirect_uri(response, rp)
    assert "code" in result, result
    exchanged = oidc.exchange(rp, result["code"])
    assert exchanged.status_code == 200, exchanged.get_data(as_text=True)
    tokens = dict(exchanged.json)
    claims = jwt_payload(tokens["id_token"])
    tokens.update(sid=claims["sid"], sub=claims["sub"])
    return tokens


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- what a relying app sees of its tokens ------------------------------------------------------------


def introspection(app, rp: dict, token: str) -> dict:
    response = token_request(app.test_client(), rp, {"token": token}, path="/introspect")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def assert_tokens_dead(app, rp: dict, tokens: dict) -> None:
    """Refresh refused, access token inactive at introspection and refused by UserInfo, at once."""
    http = app.test_client()
    refreshed = token_request(http, rp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 400 and refreshed.json["error"] == "invalid_grant", refreshed.json
    assert introspection(app, rp, tokens["access_token"]) == {"active": False}
    info = http.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert info.status_code == 401, info.status_code
    assert 'error="invalid_token"' in info.headers["WWW-Authenticate"]


def assert_tokens_alive(app, rp: dict, tokens: dict) -> None:
    assert introspection(app, rp, tokens["access_token"])["active"] is True
    assert app.test_client().get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 200


# -- database views, each in a context of its own ------------------------------------------------------


def session_row(app, session_id: str) -> dict:
    with app.app_context():
        row = db.session.get(BrowserSession, session_id)
        return {"ended_at": row.ended_at, "end_reason": row.end_reason, "user_id": row.user_id}


def delivery_rows(app, session_id: str | None = None) -> list[dict]:
    with app.app_context():
        query = db.select(LogoutDelivery).order_by(LogoutDelivery.created_at)
        if session_id:
            query = query.where(LogoutDelivery.session_id == session_id)
        return [{"id": r.id, "session_id": r.session_id, "client_id": r.client_id, "status": r.status,
                 "attempts": r.attempts, "next_attempt_at": r.next_attempt_at, "last_error": r.last_error,
                 "created_at": r.created_at, "delivered_at": r.delivered_at}
                for r in db.session.scalars(query)]


def session_ended_events(app, user_id: str, session_id: str) -> list[dict]:
    """The audit trail's session_ended records for this session (SPEC §6.11: ended, and by whom)."""
    with app.app_context():
        return [{"actor_type": e.actor_type, "actor_id": e.actor_id, "details": e.details}
                for e in services_of(app).audit.for_user(user_id)
                if e.event == "session_ended" and e.session_id == session_id]


# -- back-channel logout -------------------------------------------------------------------------------


def wait_for_posts(receiver, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(receiver.requests) >= count:
            return list(receiver.requests)
        time.sleep(0.02)
    raise AssertionError(f"expected {count} back-channel POST(s), got {len(receiver.requests)}")


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def logout_token_of(request: dict) -> str:
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded", request["headers"]
    form = parse_qs(request["body"].decode())
    assert list(form) == ["logout_token"] and len(form["logout_token"]) == 1, form
    return form["logout_token"][0]


def verify_logout_token(app, token: str, client_id: str, sid: str, sub: str) -> dict:
    """OIDC Back-Channel Logout 1.0 §2.4, checked with the keys the IdP publishes."""
    keys = KeySet.import_key_set(json.loads(app.test_client().get("/jwks").data))
    decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    assert decoded.header["typ"] == "logout+jwt", decoded.header
    claims = decoded.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == client_id
    assert claims["sid"] == sid and claims["sub"] == sub
    assert claims["events"] == {LOGOUT_EVENT: {}}
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert isinstance(claims["iat"], int) and abs(claims["iat"] - time.time()) < 120
    assert claims["exp"] > claims["iat"]
    assert "nonce" not in claims, "§2.4: a logout token must not contain a nonce"
    return claims


# -- mail written to the file outbox (IDP_MAIL_URL=file://…) -------------------------------------------


def outbox(app) -> list:
    """The messages in the app's mail folder, once the notices queued so far were written."""
    assert services_of(app).notifier.notices.drain(10)
    folder = Path(urlsplit(services_of(app).settings.mail_url).path)
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=default_policy) for p in files]


def end_link_path(text: str) -> str:
    match = re.search(r"http://localhost:5000(/account/sessions/end-link/[A-Za-z0-9_-]{32,})\s", text)
    assert match, text
    return match.group(1)


# -- the OpenAPI document held to what the server answers -----------------------------------------------


def _resolve(node, document: dict, strict: bool):
    """Inline every $ref, turn OpenAPI 3.0 `nullable` into a JSON Schema null type and, when strict,
    refuse properties the document does not name (a field the API sends must be documented)."""
    if isinstance(node, list):
        return [_resolve(item, document, strict) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _resolve(copy.deepcopy(target), document, strict)
    schema = {key: _resolve(value, document, strict) for key, value in node.items()}
    if schema.pop("nullable", False):
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if strict and schema.get("type") in ("object", ["object", "null"]) and "properties" in schema:
        schema.setdefault("additionalProperties", False)
    return schema


class OpenApiChecker:
    """Finds the documented operation of a request and validates the response against it."""

    def __init__(self, document: dict):
        self.document = document
        self.templates = [(re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"), path)
                          for path in document["paths"]]
        self.seen: set[tuple[str, str, str]] = set()

    def template_for(self, path: str) -> str:
        matches = [template for pattern, template in self.templates if pattern.match(path)]
        # A literal segment beats a parameter: /users/{id}/logout is not /users/{id}.
        assert matches, f"{path} is not in the OpenAPI document"
        return min(matches, key=lambda t: t.count("{"))

    def check(self, method: str, url: str, response) -> None:
        template = self.template_for(urlsplit(url).path)
        operation = self.document["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not documented"
        status = str(response.status_code)
        documented = operation["responses"].get(status)
        assert documented is not None, (
            f"{method} {template} answered {status}, which is not documented: {response.get_data(as_text=True)}")
        self.seen.add((method.upper(), template, status))
        for header in documented.get("headers", {}):
            assert response.headers.get(header), f"{method} {template} {status} documents a {header} header"
        content = documented.get("content")
        if not content:
            assert response.get_data() == b"", f"{method} {template} {status} documents no body"
            return
        assert response.mimetype in content, (response.mimetype, list(content))
        schema = _resolve(content[response.mimetype]["schema"], self.document, strict=True)
        validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(response.json), key=lambda e: list(e.path))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors)


class Api:
    """Calls /api with a bearer token; every answer is checked against the OpenAPI document."""

    def __init__(self, app, checker: OpenApiChecker | None = None):
        self.app = app
        self.checker = checker or OpenApiChecker(app.test_client().get("/api/openapi.json").json)

    def call(self, method: str, url: str, token: str | None = None, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers.update(bearer(token))
        response = self.app.test_client().open(url, method=method, headers=headers, **kwargs)
        self.checker.check(method, url, response)
        if response.status_code >= 400:
            assert response.headers.get("Cache-Control") == "no-store", (url, response.headers)
        return response

    def get(self, url, token=None, **kwargs):
        return self.call("GET", url, token, **kwargs)

    def post(self, url, token=None, **kwargs):
        return self.call("POST", url, token, **kwargs)

    def patch(self, url, token=None, **kwargs):
        return self.call("PATCH", url, token, **kwargs)

    def delete(self, url, token=None, **kwargs):
        return self.call("DELETE", url, token, **kwargs)


def assert_error(response, status: int, error: str, description: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"], body
    if description is not None:
        assert body["error_description"] == description, body
    return body
