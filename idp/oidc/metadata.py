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


def init_metadata(app, settings) -> None:
    app.extensions["idp_discovery"] = json.dumps(discovery_document(settings.issuer), separators=(",", ":")).encode()


@bp.get("/.well-known/openid-configuration")
@csrf.exempt
def discovery():
    return Response(current_app.extensions["idp_discovery"], mimetype="application/json",
                    headers={"Cache-Control": "public, max-age=300"})


@bp.get("/jwks")
@csrf.exempt
def jwks():
    return Response(services().keys.ring().jwks_bytes, mimetype="application/json",
                    headers={"Cache-Control": "public, max-age=60"})
