"""Discovery and JWKS: answered from prepared bytes before Flask, with the headers Flask would give."""

from __future__ import annotations

import json

import pytest

DOCUMENTS = ("/.well-known/openid-configuration", "/jwks")
SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
                    "Cross-Origin-Opener-Policy", "Permissions-Policy")


@pytest.mark.parametrize("path", DOCUMENTS)
def test_documents_carry_every_header_once(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.data)
    for name in (*SECURITY_HEADERS, "Cache-Control", "Access-Control-Allow-Origin"):
        assert len(response.headers.getlist(name)) == 1, name
    # Public and identical for every caller: a shared cache may hand one copy to a script of any origin.
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["Cache-Control"].startswith("public, max-age=")


@pytest.mark.parametrize("path", DOCUMENTS)
def test_head_gives_the_headers_without_the_body(app, path):
    client = app.test_client()
    full = client.get(path)
    head = client.head(path)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == full.headers["Content-Length"]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_other_methods_are_refused_as_json(app, path):
    response = app.test_client().post(path, data={"x": "1"})
    assert response.status_code == 405
    assert response.is_json
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_trailing_slash_is_not_the_document(app):
    response = app.test_client().get("/jwks/")
    assert response.status_code == 404
    assert response.is_json


def test_discovery_names_this_issuer(app):
    document = json.loads(app.test_client().get("/.well-known/openid-configuration").data)
    issuer = app.extensions["idp"].settings.issuer
    assert document["issuer"] == issuer
    assert document["jwks_uri"] == f"{issuer}/jwks"


def test_jwks_shows_a_rotation_at_once_and_matches_the_flask_answer(app):
    """After a rotation the ring is reread on the next JWKS request (through Flask), and the answer
    from prepared bytes afterwards is the same document with the same headers."""
    client = app.test_client()
    keys = app.extensions["idp"].keys
    before = {key["kid"] for key in json.loads(client.get("/jwks").data)["keys"]}
    with app.app_context():
        created = set(keys.rotate())
    assert keys.fresh_ring() is None
    reread = client.get("/jwks")
    assert keys.fresh_ring() is not None
    prepared = client.get("/jwks")
    published = {key["kid"] for key in json.loads(prepared.data)["keys"]}
    assert created <= published and before <= published  # retired keys stay published for their grace
    assert reread.data == prepared.data
    for name in (*SECURITY_HEADERS, "Cache-Control", "Access-Control-Allow-Origin", "Content-Type",
                 "Content-Length"):
        assert reread.headers.getlist(name) == prepared.headers.getlist(name), name
