"""Redirect URIs of registered clients: what counts as the same URI."""

from __future__ import annotations

from urllib.parse import urlsplit

from idp.services.clients import is_loopback_host


def redirect_uri_matches(registered: list[str], requested: str) -> bool:
    """Exact string match (RFC 9700 §2.1); only loopback IP URIs of native apps may vary the port (RFC 8252 §7.3)."""
    if requested in registered:
        return True
    parts = urlsplit(requested)
    if parts.scheme != "http" or parts.hostname == "localhost" or not is_loopback_host(parts.hostname):
        return False
    try:
        parts.port  # a port that is not a number is no loopback redirect at all
    except ValueError:
        return False
    wanted = _without_port(parts)
    return any(_without_port(urlsplit(uri)) == wanted for uri in registered)


def _without_port(parts) -> tuple:
    return (parts.scheme, parts.hostname, parts.path, parts.query, parts.fragment, parts.username)
