"""Our Client row seen through Authlib's client interface."""

from __future__ import annotations

from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

from idp.services.clients import is_loopback_host
from idp.storage.models import Client

SECRET_METHODS = ("client_secret_basic", "client_secret_post")


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


class OAuthClient(ClientMixin):
    def __init__(self, row: Client, check_secret):
        self.row = row
        self.client_id = row.client_id
        self._check_secret = check_secret

    def get_client_id(self):
        return self.row.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        allowed = set(self.row.scope.split())
        return " ".join(s for s in dict.fromkeys(scope.split()) if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri_matches(self.row.redirect_uris, redirect_uri)

    def check_client_secret(self, client_secret):
        return self._check_secret(self.row, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        if self.row.is_public:
            return method == "none"
        if method not in SECRET_METHODS:
            return False
        registered = self.row.token_endpoint_auth_method
        return registered is None or registered == method

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.row.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.row.grant_types
