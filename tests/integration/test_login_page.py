"""The hosted sign-in page and the web shell around it, on both backends.

Contract (SPEC §4, §6.3, §6.12): field names and labels, one message whatever went wrong,
CSRF, cookie flags, no session fixation, security headers, no open redirect, password
throttling shared by every instance, and bad input never ending in a 500 or a traceback.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from argon2 import PasswordHasher
from flask import has_app_context

from idp import create_app
from idp.extensions import db
from idp.storage.models import User, utcnow
from tests.integration.mfa_support import set_cookie_header
from tests.support import PASSWORD, csrf_from

EMAIL = "alice@example.com"
GENERIC_FAILURE = "Incorrect email or password."
HTTPS_ISSUER = "https://idp.example"


# -- fixtures and helpers ---------------------------------------------------------------------
#
# The shared `user` / `rp` fixtures keep an app context pushed for the whole test, and Flask then
# runs every test-client request inside it: `g` (the CSRF token, the current-session cache) would
# leak from one request, and one "browser", to the next. These fixtures set up and get out.


@pytest.fixture
def user(app):
    with app.app_context():
        return app.extensions["idp"].accounts.create_user(EMAIL, PASSWORD, "Alice").id


@pytest.fixture
def rp(app):
    with app.app_context():
        client, _ = app.extensions["idp"].clients.create(name="Alarm panel app",
                                                         redirect_uris=["https://rp.example/cb"])
        return {"client_id": client.client_id, "redirect_uri": "https://rp.example/cb"}


def create_users(app, *emails: str) -> None:
    with app.app_context():
        for email in emails:
            app.extensions["idp"].accounts.create_user(email, PASSWORD)


class _Form(HTMLParser):
    """Inputs (by name) and labels (for → text) of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.inputs: dict[str, dict] = {}
        self.labels: dict[str, str] = {}
        self._label_for: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name"):
            self.inputs[attrs["name"]] = attrs
        elif tag == "label":
            self._label_for = attrs.get("for")
            if self._label_for:
                self.labels[self._label_for] = ""

    def handle_endtag(self, tag):
        if tag == "label":
            self._label_for = None

    def handle_data(self, data):
        if self._label_for:
            self.labels[self._label_for] += data

    def label_of(self, name: str) -> str:
        field_id = self.inputs[name].get("id")
        assert field_id, f"input {name!r} has no id for a <label for> to point at"
        assert field_id in self.labels, f"input {name!r} has no <label for={field_id!r}>"
        return self.labels[field_id].strip()


def session_cookie_names(response) -> list[str]:
    names = [header.split("=", 1)[0] for header in response.headers.getlist("Set-Cookie")]
    return [name for name in names if name.endswith("idp_session")]


def sign_in(client, username: str = EMAIL, password: str = PASSWORD, next_url: str | None = None, **kwargs):
    assert not has_app_context(), "requests would share the test's app context and its `g`"
    page = client.get("/login" if next_url is None else f"/login?next={quote(next_url, safe='')}", **kwargs)
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    form_next = re.search(r'name="next" value="([^"]*)"', html).group(1)
    return client.post(
        "/login",
        data={"csrf_token": csrf_from(html), "next": form_next, "username": username, "password": password},
        **kwargs,
    )


def normalised(html: str, username: str) -> str:
    """The page with the echoed username and the (time-stamped) CSRF token taken out."""
    html = re.sub(r'name="csrf_token" value="[^"]+"', 'name="csrf_token" value="CSRF"', html)
    return html.replace(username, "USERNAME")


def assert_no_traceback(body: str) -> None:
    assert "Traceback" not in body and 'File "' not in body and "werkzeug" not in body.lower()


# Requests the way a browser on the https issuer sends them (Flask-WTF checks the Referer over https).
ON_HTTPS = {"base_url": HTTPS_ISSUER, "headers": {"Referer": HTTPS_ISSUER + "/login"}}


# -- the form -----------------------------------------------------------------------------------


def test_sign_in_page_fields_and_labels(app):
    response = app.test_client().get("/login")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    form = _Form(response.get_data(as_text=True))
    assert form.label_of("username") == "Email"
    assert form.label_of("password") == "Password"
    assert form.inputs["password"]["type"] == "password"
    assert "username" in form.inputs["username"].get("autocomplete", "").split()
    assert form.inputs["password"].get("autocomplete") == "current-password"
    assert form.inputs["csrf_token"]["type"] == "hidden" and form.inputs["csrf_token"]["value"]

    # login_hint pre-fills the email, escaped.
    response = app.test_client().get("/login?login_hint=" + quote('"><script>alert(1)</script>'))
    html = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert _Form(html).inputs["username"]["value"] == '"><script>alert(1)</script>'


# -- one message whatever went wrong --------------------------------------------------------------


def test_wrong_password_and_unknown_account_look_the_same(app, user):
    client = app.test_client()
    wrong = sign_in(client, EMAIL, "not the right password at all")
    unknown = sign_in(client, "nobody@example.com", "not the right password at all")
    assert wrong.status_code == unknown.status_code == 200
    wrong_html, unknown_html = wrong.get_data(as_text=True), unknown.get_data(as_text=True)
    assert GENERIC_FAILURE in wrong_html and GENERIC_FAILURE in unknown_html
    assert normalised(wrong_html, EMAIL) == normalised(unknown_html, "nobody@example.com")
    assert set(wrong.headers.keys()) == set(unknown.headers.keys())
    assert not session_cookie_names(wrong) and not session_cookie_names(unknown)
    # The email is echoed back for a retry; the password never is.
    assert _Form(wrong_html).inputs["username"]["value"] == EMAIL
    assert "not the right password at all" not in wrong_html
    assert "value" not in _Form(wrong_html).inputs["password"]


def test_disabled_account_gets_the_generic_message(app, user):
    with app.app_context():
        db.session.get(User, user).disabled_at = utcnow()
        db.session.commit()
    response = sign_in(app.test_client())
    assert response.status_code == 200
    assert GENERIC_FAILURE in response.get_data(as_text=True)
    assert not session_cookie_names(response)


# -- CSRF ---------------------------------------------------------------------------------------


def test_post_without_valid_csrf_token_is_refused(app, user):
    client = app.test_client()
    client.get("/login")
    for token in (None, "", "forged-token"):
        data = {"username": EMAIL, "password": PASSWORD, "next": "/account"}
        if token is not None:
            data["csrf_token"] = token
        response = client.post("/login", data=data)
        assert response.status_code == 400, token
        assert response.mimetype == "text/html"
        body = response.get_data(as_text=True)
        assert "The form expired or was sent from another site" in body
        assert_no_traceback(body)
        assert not session_cookie_names(response)
    assert client.get("/account").status_code == 302, "the right password without a CSRF token signs nobody in"

    # A valid token from another browser (login CSRF) is no better.
    token = csrf_from(app.test_client().get("/login").get_data(as_text=True))
    response = app.test_client().post("/login", data={"csrf_token": token, "username": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert not session_cookie_names(response)


# -- the session cookie ---------------------------------------------------------------------------


def test_successful_sign_in_sets_a_locked_down_session_cookie(app, user):
    response = sign_in(app.test_client())
    assert response.status_code == 303, "303 makes the browser GET the next page; 307 would re-post the password"
    assert urlsplit(response.headers["Location"]).path == "/account"
    cookie = set_cookie_header(response, "idp_session")
    assert cookie is not None, response.headers.getlist("Set-Cookie")
    assert len(cookie["value"]) >= 43
    assert cookie.get("httponly") is True
    assert cookie.get("samesite") == "Lax"
    assert cookie.get("path") == "/"
    assert "domain" not in cookie
    assert "secure" not in cookie, "the http issuer is for local development; a Secure cookie would be dropped"
    assert int(cookie["max-age"]) == app.extensions["idp"].settings.session_absolute_ttl


def test_signing_in_again_replaces_the_cookie_value(app, user):
    client = app.test_client()
    first = set_cookie_header(sign_in(client), "idp_session")["value"]
    second = set_cookie_header(sign_in(client), "idp_session")["value"]
    assert first != second
    assert client.get("/account").status_code == 200

    replay = app.test_client()
    replay.set_cookie("idp_session", first)
    response = replay.get("/account")
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"


def test_cookie_planted_before_sign_in_is_not_adopted(app, user):
    # Session fixation: whatever the browser brings, the server hands out a value of its own.
    client = app.test_client()
    client.set_cookie("idp_session", "attacker-chosen-value-000000000000000000000")
    issued = set_cookie_header(sign_in(client), "idp_session")["value"]
    assert issued != "attacker-chosen-value-000000000000000000000"
    attacker = app.test_client()
    attacker.set_cookie("idp_session", "attacker-chosen-value-000000000000000000000")
    assert attacker.get("/account").status_code == 302


def test_a_hash_with_older_parameters_is_replaced_at_the_next_sign_in(app, user):
    # A deployment that raises its argon2 parameters upgrades each stored hash the next time its
    # owner signs in, when the password is in hand; until then the old hash still signs in.
    older = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    with app.app_context():
        db.session.get(User, user).password_hash = older
        db.session.commit()
    assert sign_in(app.test_client()).status_code == 303
    with app.app_context():
        upgraded = db.session.get(User, user).password_hash
        passwords = app.extensions["idp"].passwords
        assert upgraded != older and not passwords.needs_rehash(upgraded)
        assert passwords.verify(upgraded, PASSWORD)
    settings = app.extensions["idp"].settings
    assert upgraded.startswith(f"$argon2id$v=19$m={settings.argon2_memory_kib},t={settings.argon2_time_cost},"
                               f"p={settings.argon2_parallelism}$")

    # A wrong password leaves the stored hash alone.
    with app.app_context():
        db.session.get(User, user).password_hash = older
        db.session.commit()
    assert GENERIC_FAILURE in sign_in(app.test_client(), password="not the password").get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user).password_hash == older


def test_https_issuer_uses_a_host_prefixed_secure_cookie(make_app):
    app = make_app(issuer=HTTPS_ISSUER)
    create_users(app, EMAIL)
    client = app.test_client()
    ui_cookie = set_cookie_header(client.get("/login", base_url=HTTPS_ISSUER), "__Host-idp_ui")
    assert ui_cookie is not None and ui_cookie.get("secure") is True and ui_cookie.get("path") == "/"
    response = sign_in(client, **ON_HTTPS)
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    assert set_cookie_header(response, "idp_session") is None
    cookie = set_cookie_header(response, "__Host-idp_session")
    assert cookie is not None, response.headers.getlist("Set-Cookie")
    # RFC 6265bis §4.1.3.2: __Host- needs Secure, Path=/ and no Domain, or browsers drop it.
    assert cookie.get("secure") is True
    assert cookie.get("httponly") is True
    assert cookie.get("samesite") == "Lax"
    assert cookie.get("path") == "/"
    assert "domain" not in cookie
    account = client.get("/account", base_url=HTTPS_ISSUER)
    assert account.status_code == 200 and EMAIL in account.get_data(as_text=True)
    # HSTS only now that the issuer is https.
    hsts = account.headers["Strict-Transport-Security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000


# -- security headers ------------------------------------------------------------------------------


def test_security_headers_on_the_sign_in_page(app):
    response = app.test_client().get("/login")
    csp = response.headers["Content-Security-Policy"]
    directives = {d.strip().split()[0]: d.strip().split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("no-referrer", "same-origin", "strict-origin")
    assert "no-store" in response.headers["Cache-Control"]
    assert "Strict-Transport-Security" not in response.headers, "HSTS over plain http would be ignored or harmful"


def test_cors_only_on_public_endpoints(app, rp):
    client = app.test_client()
    params = {"client_id": rp["client_id"], "response_type": "code", "redirect_uri": rp["redirect_uri"],
              "scope": "openid"}
    origin = {"Origin": "https://evil.example"}
    # RFC 9700 §2.6: the authorization endpoint is for top-level navigation, never for scripts.
    private = [
        client.get("/authorize", query_string=params, headers=origin),
        client.post("/authorize", data=params, headers=origin),
        client.get("/login", headers=origin),
        client.get("/account", headers=origin),
    ]
    for response in private:
        assert response.status_code < 500
        assert "Access-Control-Allow-Origin" not in response.headers, response.request.path
        assert "Access-Control-Allow-Credentials" not in response.headers
    for path in ("/jwks", "/.well-known/openid-configuration"):
        response = client.get(path, headers={"Origin": "https://spa.example"})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*", path
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_security_headers_keep_what_a_view_set_and_appear_once(app, rp):
    client = app.test_client()
    discovery = client.get("/.well-known/openid-configuration")
    assert discovery.headers.getlist("Cache-Control") == ["public, max-age=300"]
    token = client.post("/token", data={"grant_type": "client_credentials"})
    assert token.headers.getlist("Cache-Control") == ["no-store"]
    assert token.headers.getlist("Pragma") == ["no-cache"]
    for response in (discovery, token, client.get("/login")):
        for name in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"):
            assert len(response.headers.getlist(name)) == 1, name


def test_a_request_without_the_ui_cookie_gets_no_cookie_back(app):
    """The signed-cookie session is opened lazily; an app's call must not start one."""
    response = app.test_client().get("/.well-known/openid-configuration")
    assert "Set-Cookie" not in response.headers


# -- no open redirect ------------------------------------------------------------------------------

OFF_SITE = [
    "https://evil.example",
    "https://evil.example/account",
    "//evil.example",
    "//evil.example/account",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/\t/evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "evil.example",
]


def test_off_site_next_is_ignored(app, user):
    for target in OFF_SITE:
        client = app.test_client()
        page = client.get("/login", query_string={"next": target})
        html = page.get_data(as_text=True)
        assert _Form(html).inputs["next"]["value"] == "/account", target
        # The form field is ignored just the same when posted directly.
        response = client.post("/login", data={"csrf_token": csrf_from(html), "next": target,
                                               "username": EMAIL, "password": PASSWORD})
        assert response.status_code == 303, target
        assert response.headers["Location"] == "/account", target
    response = sign_in(app.test_client(), next_url="/account?tab=profile")
    assert response.status_code == 303
    assert response.headers["Location"] == "/account?tab=profile"


# -- password throttling ---------------------------------------------------------------------------


def _fail(client, username: str, times: int) -> None:
    for _ in range(times):
        response = sign_in(client, username, "wrong password, really wrong")
        assert response.status_code == 200
        assert GENERIC_FAILURE in response.get_data(as_text=True)


def _assert_throttled(response) -> None:
    assert response.status_code == 429
    body = response.get_data(as_text=True)
    assert "Too many failed sign-in attempts" in body
    assert GENERIC_FAILURE not in body
    assert int(response.headers["Retry-After"]) > 0
    assert not session_cookie_names(response)


def test_account_throttle_refuses_even_the_right_password(app, user):
    limit = app.extensions["idp"].settings.password_failures_per_account
    client = app.test_client()
    # Case and spaces do not give a fresh counter: it is one account.
    _fail(client, EMAIL.upper(), limit - 1)
    _fail(client, f"  {EMAIL}  ", 1)
    _assert_throttled(sign_in(client, EMAIL, PASSWORD))
    _assert_throttled(sign_in(app.test_client(), EMAIL, PASSWORD))
    assert client.get("/account").status_code == 302


def test_one_failure_below_the_limit_still_signs_in_and_resets(app, user):
    limit = app.extensions["idp"].settings.password_failures_per_account
    client = app.test_client()
    _fail(client, EMAIL, limit - 1)
    assert sign_in(client, EMAIL, PASSWORD).status_code == 303
    # The success cleared the account counter: a fresh run of failures is allowed again.
    _fail(client, EMAIL, limit - 1)
    assert sign_in(client, EMAIL, PASSWORD).status_code == 303


def test_unknown_account_is_throttled_the_same_way(app, user):
    limit = app.extensions["idp"].settings.password_failures_per_account
    known, unknown = app.test_client(), app.test_client()
    _fail(known, EMAIL, limit)
    _fail(unknown, "nobody@example.com", limit)
    known_response = sign_in(known, EMAIL, PASSWORD)
    unknown_response = sign_in(unknown, "nobody@example.com", PASSWORD)
    _assert_throttled(known_response)
    _assert_throttled(unknown_response)
    assert normalised(known_response.get_data(as_text=True), EMAIL) == normalised(
        unknown_response.get_data(as_text=True), "nobody@example.com"
    )


def test_throttle_of_one_account_leaves_the_others_alone(make_app):
    app = make_app(password_failures_per_account=3)
    create_users(app, EMAIL, "bob@example.com")
    client = app.test_client()
    _fail(client, EMAIL, 3)
    _assert_throttled(sign_in(client, EMAIL, PASSWORD))
    assert sign_in(app.test_client(), "bob@example.com", PASSWORD).status_code == 303


def test_ip_throttle_across_accounts(make_app):
    app = make_app(password_failures_per_ip=4, password_failures_per_account=100)
    create_users(app, EMAIL)
    client = app.test_client()
    for n in range(4):
        _fail(client, f"guess{n}@example.com", 1)
    _assert_throttled(sign_in(client, EMAIL, PASSWORD))
    other_ip = app.test_client()
    response = sign_in(other_ip, EMAIL, PASSWORD, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 303, "the per-IP limit holds for that IP only"


def test_account_throttle_is_shared_by_every_instance(make_app, backend):
    if backend != "postgres":
        pytest.skip("the in-process store serves one process only (SPEC §1)")
    first = make_app()
    create_users(first, EMAIL)
    # A second instance on the same PostgreSQL and Redis (same key prefix), as behind a load balancer.
    second = create_app(first.extensions["idp"].settings)
    second.config["TESTING"] = True
    try:
        limit = first.extensions["idp"].settings.password_failures_per_account
        half = limit // 2
        _fail(first.test_client(), EMAIL, half)
        _fail(second.test_client(), EMAIL, limit - half)
        _assert_throttled(sign_in(first.test_client(), EMAIL, PASSWORD))
        _assert_throttled(sign_in(second.test_client(), EMAIL, PASSWORD))
    finally:
        with second.app_context():
            db.session.remove()
            db.engine.dispose()


def test_password_sign_in_fails_closed_when_redis_is_down(make_app):
    working = make_app()
    create_users(working, EMAIL)
    # The same database, but the shared store is unreachable: counters cannot be read or written.
    app = create_app(working.extensions["idp"].settings.replace(redis_url="redis://127.0.0.1:1/0"))
    app.config["TESTING"] = True
    try:
        client = app.test_client()
        assert client.get("/login").status_code == 200
        response = sign_in(client, EMAIL, PASSWORD)
        assert response.status_code == 503
        body = response.get_data(as_text=True)
        assert "temporarily unavailable" in body
        assert "127.0.0.1" not in body and "redis" not in body.lower()
        assert not session_cookie_names(response)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


# -- friendly errors -------------------------------------------------------------------------------


def test_404_and_405_are_friendly_pages(app):
    client = app.test_client()
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "Page not found" in body
    assert_no_traceback(body)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"

    response = client.delete("/login")
    assert response.status_code == 405
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "This page cannot be used that way" in body
    assert_no_traceback(body)
    assert "GET" in response.headers["Allow"]


def test_api_and_token_errors_are_json(app):
    client = app.test_client()
    for method, path, status, error in [
        ("GET", "/api/no-such-thing", 404, "not_found"),
        ("GET", "/api/me/nothing-here", 404, "not_found"),
        ("GET", "/token", 405, "method_not_allowed"),
        ("PUT", "/token", 405, "method_not_allowed"),
    ]:
        response = client.open(path, method=method)
        assert response.status_code == status, (method, path)
        assert response.mimetype == "application/json", (method, path)
        assert response.json["error"] == error
        assert response.json["error_description"]
    assert sorted(client.get("/token").headers["Allow"].split(", ")) == ["OPTIONS", "POST"]


def test_invalid_bytes_in_the_url_and_body_are_not_a_500(app, user):
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    body = b"csrf_token=" + quote(csrf_from(html)).encode() + b"&username=%ff%fe%fd&password=%c3%28&next=%ff"
    response = client.post("/login", data=body, content_type="application/x-www-form-urlencoded")
    assert 200 <= response.status_code < 500, response.status_code
    assert_no_traceback(response.get_data(as_text=True))
    assert not session_cookie_names(response)
    for path in ("/login?next=%ff%fe", "/login?login_hint=%ff", "/%ff", "/account?x=%c3%28", "/authorize?client_id=%ff"):
        response = client.get(path)
        assert response.status_code < 500, (path, response.status_code)
        assert_no_traceback(response.get_data(as_text=True))
    html = client.get("/login").get_data(as_text=True)
    raw = b"csrf_token=" + quote(csrf_from(html)).encode() + b"&username=\xff\xfe&password=\x80\x81"
    response = client.post("/login", data=raw, content_type="application/x-www-form-urlencoded")
    assert 200 <= response.status_code < 500, response.status_code
    assert_no_traceback(response.get_data(as_text=True))


def test_huge_body_is_refused_with_413(app):
    client = app.test_client()
    huge = {"username": "x" * (300 * 1024), "password": "y"}
    page = client.post("/login", data=huge)
    assert page.status_code == 413
    assert page.mimetype == "text/html"
    assert "That was too large" in page.get_data(as_text=True)
    assert_no_traceback(page.get_data(as_text=True))
    api = client.post("/token", data=huge)
    assert api.status_code == 413
    assert api.mimetype == "application/json" and api.json["error"] == "invalid_request"
    many_fields = "&".join(f"f{i}=v" for i in range(5000))
    response = client.post("/login", data=many_fields, content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500


# -- the account page ------------------------------------------------------------------------------


def test_account_page_needs_a_sign_in_and_shows_the_email(app, user):
    client = app.test_client()
    response = client.get("/account")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and not location.netloc
    assert parse_qs(location.query) == {"next": ["/account"]}

    response = sign_in(client, next_url="/account")
    assert response.headers["Location"] == "/account"
    page = client.get("/account")
    assert page.status_code == 200
    assert re.search(r'id="email">alice@example\.com<', page.get_data(as_text=True))
    assert "no-store" in page.headers["Cache-Control"]
