"""Redirect URIs: what a client may register (RFC 9700 §2.1, RFC 8252) and how a request must match."""

from __future__ import annotations

import pytest

from idp.domain.errors import DomainError
from idp.oidc.client import redirect_uri_matches
from idp.services.clients import is_loopback_host, validate_redirect_uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example/cb",
        "https://rp.example:8443/oauth/callback?tenant=a",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8080/cb",
        "http://[::1]:9000/cb",
        "http://localhost:3000/cb",
        "com.example.camera:/cb",
        "com.example.app://oauth2redirect",
    ],
)
def test_valid_redirect_uris(uri):
    assert validate_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("http://rp.example/cb", "plain-http"),  # RFC 9700 B02: no http off the loopback interface
        ("http://localhost.evil.example/cb", "plain-http"),
        ("http://127.0.0.1.nip.io/cb", "plain-http"),
        ("https://rp.example/cb#frag", "fragment"),
        ("https://rp.example/cb#", "fragment"),
        ("javascript:alert(1)", "scheme"),
        ("JavaScript:alert(1)", "scheme"),
        ("data:text/html,<script>alert(1)</script>", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("myapp:/cb", "reverse-domain"),  # RFC 8252 §7.1: a private-use scheme is a reverse domain name
        ("myapp://cb", "reverse-domain"),
        ("/relative/cb", "absolute"),
        ("rp.example/cb", "absolute"),
        ("https:///cb", "no host"),
        ("https://user:pw@rp.example/cb", "credentials"),
        ("https://rp.example\\@evil.example/cb", "credentials"),
    ],
)
def test_invalid_redirect_uris(uri, reason):
    with pytest.raises(DomainError, match=reason):
        validate_redirect_uri(uri)


@pytest.mark.parametrize("uri", ["", None, 42, "https://rp.example/c b", "https://rp.example/cb\n",
                                 "https://rp.example/" + "a" * 2000])
def test_malformed_redirect_uris(uri):
    with pytest.raises(DomainError, match="Invalid"):
        validate_redirect_uri(uri)


def test_message_names_the_kind_of_uri():
    with pytest.raises(DomainError, match="post-logout redirect URI"):
        validate_redirect_uri("http://rp.example/bye", "post-logout redirect URI")


@pytest.mark.parametrize("host, loopback", [("localhost", True), ("127.0.0.1", True), ("127.5.6.7", True),
                                            ("::1", True), ("LOCALHOST.", False), ("localhost.example", False),
                                            ("10.0.0.1", False), (None, False), ("", False)])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


REGISTERED = ["https://rp.example/cb", "com.example.camera:/cb"]


@pytest.mark.parametrize("requested", REGISTERED)
def test_exact_match(requested):
    assert redirect_uri_matches(REGISTERED, requested) is True


@pytest.mark.parametrize(
    "requested",
    [
        "https://rp.example/cb/",
        "https://rp.example/CB",
        "https://RP.example/cb",
        "https://rp.example:443/cb",
        "https://rp.example/cb?x=1",
        "https://rp.example/cb#x",
        "http://rp.example/cb",
        "https://rp.example/cb/../evil",
        "https://rp.example.evil.example/cb",
        "https://rp.example/c",
        "com.example.camera:/cb2",
        "com.example.camera://cb",
        "",
    ],
)
def test_anything_but_an_exact_match_is_refused(requested):
    assert redirect_uri_matches(REGISTERED, requested) is False


def test_nothing_registered_matches_nothing():
    assert redirect_uri_matches([], "https://rp.example/cb") is False


@pytest.mark.parametrize(
    "registered, requested",
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1:9999/cb"),
        ("http://127.0.0.1:8080/cb?app=1", "http://127.0.0.1:9999/cb?app=1"),
        ("http://[::1]/cb", "http://[::1]:6000/cb"),
    ],
)
def test_loopback_ip_may_vary_the_port(registered, requested):
    # RFC 8252 §7.3: a native app listens on whatever port the OS gives it.
    assert redirect_uri_matches([registered], requested) is True


@pytest.mark.parametrize(
    "registered, requested",
    [
        ("http://localhost:8080/cb", "http://localhost:9090/cb"),  # RFC 8252 §8.3: localhost is not an IP literal
        ("http://localhost/cb", "http://localhost:9090/cb"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:9999/other"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:9999/cb/"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:9999/cb?x=1"),
        ("http://127.0.0.1/cb?app=1", "http://127.0.0.1:9999/cb?app=2"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:9999/cb#frag"),
        ("http://127.0.0.1/cb", "http://[::1]:9999/cb"),
        ("http://127.0.0.1/cb", "http://127.0.0.2:9999/cb"),
        ("http://127.0.0.1/cb", "http://evil@127.0.0.1:9999/cb"),
        ("https://127.0.0.1/cb", "https://127.0.0.1:9999/cb"),
        ("http://127.0.0.1/cb", "https://127.0.0.1:9999/cb"),
        ("https://rp.example/cb", "https://rp.example:8443/cb"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:abc/cb"),  # a port that is not a number
        ("http://127.0.0.1/cb", "http://127.0.0.1:99999/cb"),
    ],
)
def test_port_leeway_is_for_loopback_ip_only_and_nothing_else_may_differ(registered, requested):
    assert redirect_uri_matches([registered], requested) is False
