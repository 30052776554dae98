"""How the token, revocation, introspection and UserInfo endpoints read a request and answer it
(idp.oidc.token_endpoints): client authentication methods (RFC 6749 §2.3), the form rules (§3.1,
§3.2), methods, sizes, headers, and answers to failures inside them."""

from __future__ import annotations

import base64
import logging

import pytest

from tests.support import LEGAL_ERROR_TEXT, basic_auth, bearer, oauth_error, token_request

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def http(app):
    return app.test_client()


@pytest.fixture
def machine(svc):
    client, secret = svc.clients.create(name="Monitoring station", grant_types=["client_credentials"], scope="admin")
    return {"client_id": client.client_id, "client_secret": secret}


CC = {"grant_type": "client_credentials"}


def _auth_failure(response) -> None:
    oauth_error(response, 401, "invalid_client")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Basic realm="idp", error="invalid_client"'), challenge


def test_client_authentication_methods(app, svc, http, machine, public_rp):
    assert token_request(http, machine, CC, auth="basic").status_code == 200
    assert token_request(http, machine, CC, auth="post").status_code == 200
    # RFC 6749 §2.3: one method per request, and the header and the form must name the same client.
    both = http.post("/token", data={**CC, "client_secret": machine["client_secret"]},
                     headers=basic_auth(machine["client_id"], machine["client_secret"]))
    oauth_error(both, 400, "invalid_request")
    other_id = http.post("/token", data={**CC, "client_id": public_rp["client_id"]},
                         headers=basic_auth(machine["client_id"], machine["client_secret"]))
    _auth_failure(other_id)
    same_id = http.post("/token", data={**CC, "client_id": machine["client_id"]},
                        headers=basic_auth(machine["client_id"], machine["client_secret"]))
    assert same_id.status_code == 200
    for header in ("Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
                   "Basic " + base64.b64encode(machine["client_id"].encode() + b":").decode()):
        _auth_failure(http.post("/token", data=CC, headers={"Authorization": header}))
    # The secret of a confidential client is required even where public clients may send none.
    _auth_failure(http.post("/token", data={**CC, "client_id": machine["client_id"]}))
    _auth_failure(http.post("/token", data={**CC, "client_id": machine["client_id"], "client_secret": ""}))
    # A public client cannot use client_credentials at all: it has nothing to prove itself with.
    _auth_failure(token_request(http, public_rp, CC, auth="none"))
    _auth_failure(http.post("/token", data={**CC, "client_id": "x" * 65, "client_secret": "s"}))

    # A client registered for one secret method is refused with the other.
    client, secret = svc.clients.create(name="Basic only", grant_types=["client_credentials"], scope="admin",
                                        token_endpoint_auth_method="client_secret_basic")
    basic_only = {"client_id": client.client_id, "client_secret": secret}
    assert token_request(http, basic_only, CC, auth="basic").status_code == 200
    _auth_failure(token_request(http, basic_only, CC, auth="post"))


def test_form_rules(http, machine):
    auth = basic_auth(machine["client_id"], machine["client_secret"])
    for body in (b"grant_type=client_credentials&scope=%ff", b"grant_type=\xff\xfe"):
        oauth_error(http.post("/token", data=body, content_type=FORM, headers=auth), 400, "invalid_request")
    repeated = http.post("/token", data="grant_type=client_credentials&sc%22ope=a&sc%22ope=b", content_type=FORM,
                         headers=auth)
    assert oauth_error(repeated, 400, "invalid_request")["error_description"] == "A parameter appears more than once."
    many = "&".join(["grant_type=client_credentials"] + [f"f{i}=v" for i in range(1200)])
    oauth_error(http.post("/token", data=many, content_type=FORM, headers=auth), 400, "invalid_request")
    with_charset = http.post("/token", data="grant_type=client_credentials",
                             content_type=FORM + "; charset=UTF-8", headers=auth)
    assert with_charset.status_code == 200
    oauth_error(http.post("/token", data="grant_type=client_credentials", content_type="text/plain", headers=auth),
                400, "invalid_request")
    oauth_error(http.post("/token", headers={**auth, "Content-Type": FORM}), 400, "invalid_request")
    oauth_error(http.post("/token", data=b"", content_type=FORM, headers={**auth, "Content-Length": "x"}), 400,
                "invalid_request")
    too_large = http.post("/token", data="x" * (300 * 1024), content_type=FORM, headers=auth)
    assert too_large.status_code == 413 and too_large.json["error"] == "invalid_request"


def test_methods_headers_and_cors(http, machine, user, svc):
    preflight = http.options("/token", headers={"Origin": "https://spa.example"})
    assert preflight.status_code == 200 and preflight.headers["Allow"] == "OPTIONS, POST"
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    issued = token_request(http, machine, CC)
    assert "Access-Control-Allow-Origin" not in issued.headers
    from_browser = http.post("/token", data=CC, headers={**basic_auth(machine["client_id"], machine["client_secret"]),
                                                         "Origin": "https://spa.example"})
    assert from_browser.headers["Access-Control-Allow-Origin"] == "*"
    for response in (issued, from_browser, preflight):
        assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    introspection = http.post("/introspect", data={"token": "x"}, headers={"Origin": "https://spa.example"})
    assert "Access-Control-Allow-Origin" not in introspection.headers
    for path in ("/revoke", "/introspect"):
        wrong = http.get(path)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "OPTIONS, POST"
        assert wrong.json["error"] == "method_not_allowed"
    assert http.delete("/userinfo").headers["Allow"] == "GET, HEAD, OPTIONS, POST"

    # HEAD answers as GET does, without a body.
    from idp.services.access_tokens import AccessTokenRecord

    svc.grants.access_tokens.record(AccessTokenRecord("j1", machine["client_id"], user.id, None, None, "openid"),
                                    2**31 - 1)
    token = svc.keys.ring().sign({"iss": svc.settings.issuer, "sub": user.id, "aud": svc.settings.issuer,
                                  "client_id": machine["client_id"], "scope": "openid", "jti": "j1",
                                  "iat": 1, "exp": 2**31 - 1}, "ES256", typ="at+jwt")
    head = http.head("/userinfo", headers=bearer(token))
    assert head.status_code == 200 and head.get_data() == b""
    assert http.get("/userinfo", headers=bearer(token)).json == {"sub": user.id}
    assert http.head("/userinfo").status_code == 401


def test_a_failure_inside_an_endpoint_is_json_without_a_traceback(app, http, machine, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("signing hardware on fire")

    monkeypatch.setattr(app.extensions["idp"].grants, "issue_client_credentials", broken)
    with caplog.at_level(logging.ERROR, logger="idp.oidc"):
        response = token_request(http, machine, CC)
    assert response.status_code == 500
    assert response.json["error"] == "server_error"
    assert LEGAL_ERROR_TEXT.match(response.json["error_description"])
    assert "fire" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
    assert "signing hardware on fire" in caplog.text
