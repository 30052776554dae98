"""Discovery and JWKS, served from prepared bytes."""

from __future__ import annotations

import json

from flask import Response, current_app

from idp.domain.acr import ACR_VALUES_SUPPORTED
from idp.extensions import csrf
from idp.oidc.blueprint import bp
from idp.oidc.claims import CLAIMS_SUPPORTED
from idp.services import services
from idp.services.clients import SCOPES
from idp.web.headers import security_headers


def discovery_document(issuer: str) -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/logout",
        "scopes_supported": [s for s in SCOPES if s != "admin"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "userinfo_signing_alg_values_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "acr_values_supported": list(ACR_VALUES_SUPPORTED),
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "display_values_supported": ["page", "popup"],
        "ui_locales_supported": ["en"],
        "claims_locales_supported": ["en"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
DISCOVERY_CACHE = "public, max-age=300"
JWKS_CACHE = "public, max-age=60"


class PreparedDocuments:
    """Discovery and JWKS answered before Flask is entered: both are public bytes that change only
    with the configuration or the key ring, and relying apps fetch them more than anything else.
    The JWKS falls through to the Flask view when the key ring is due for its reread."""

    def __init__(self, wsgi_app, discovery: bytes, keys, always: list[tuple[str, str]]):
        self.wsgi_app = wsgi_app
        self._keys = keys
        # Public and the same for every caller, so Access-Control-Allow-Origin is always sent: a shared
        # cache may then hand one copy to anybody (RFC 9700 §2.6 allows CORS here).
        common = [("Content-Type", "application/json"), ("Access-Control-Allow-Origin", "*"), *always]
        self._discovery = discovery
        self._discovery_headers = [*common, ("Cache-Control", DISCOVERY_CACHE), ("Content-Length", str(len(discovery)))]
        self._jwks_headers = [*common, ("Cache-Control", JWKS_CACHE)]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == DISCOVERY_PATH or path == JWKS_PATH:
            method = environ.get("REQUEST_METHOD")
            if method == "GET" or method == "HEAD":
                if path == DISCOVERY_PATH:
                    body, headers = self._discovery, self._discovery_headers
                else:
                    ring = self._keys.fresh_ring()
                    if ring is None:
                        return self.wsgi_app(environ, start_response)
                    body = ring.jwks_bytes
                    headers = [*self._jwks_headers, ("Content-Length", str(len(body)))]
                start_response("200 OK", headers)
                return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)


def init_metadata(app, settings) -> None:
    discovery = json.dumps(discovery_document(settings.issuer), separators=(",", ":")).encode()
    app.extensions["idp_discovery"] = discovery
    app.wsgi_app = PreparedDocuments(app.wsgi_app, discovery, app.extensions["idp"].keys, security_headers(settings))


# The routes below answer what PreparedDocuments passes on: other methods (405), and the JWKS when
# the key ring is due for its reread.
@bp.get(DISCOVERY_PATH)
@csrf.exempt
def discovery():
    return Response(current_app.extensions["idp_discovery"], mimetype="application/json",
                    headers={"Cache-Control": DISCOVERY_CACHE})


@bp.get(JWKS_PATH)
@csrf.exempt
def jwks():
    return Response(services().keys.ring().jwks_bytes, mimetype="application/json",
                    headers={"Cache-Control": JWKS_CACHE})
