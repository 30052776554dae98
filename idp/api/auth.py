"""Bearer access tokens from this IdP, checked at once against revocation, with scope checks."""

from __future__ import annotations

import functools

from flask import g, jsonify, request

from idp.services import services


def api_error(status: int, error: str, description: str, headers: dict | None = None):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _unauthorized(description: str, with_error: bool = True):
    challenge = 'Bearer realm="idp"' + (f', error="invalid_token", error_description="{description}"'
                                        if with_error else "")
    return api_error(401, "invalid_token" if with_error else "unauthorized", description,
                     {"WWW-Authenticate": challenge})


def require_scope(scope: str):
    """The request carries an active access token with `scope`; g.api_token and g.api_user are set."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            if header[:7].lower() != "bearer " or not header[7:].strip():
                return _unauthorized("An access token is required.", with_error=False)
            svc = services()
            token = svc.grants.active_access_token(header[7:].strip())
            if token is None:
                return _unauthorized("The access token is invalid, expired or revoked.")
            if scope not in token.scopes:
                return api_error(403, "insufficient_scope", f"The token lacks the '{scope}' scope.",
                                 {"WWW-Authenticate": f'Bearer realm="idp", error="insufficient_scope", '
                                                      f'scope="{scope}"'})
            user = svc.accounts.get(token.user_id) if token.user_id else None
            if token.user_id and not svc.accounts.can_sign_in(user):
                return _unauthorized("The access token is invalid, expired or revoked.")
            if scope == "admin" and user is not None and not user.is_admin:
                return api_error(403, "forbidden", "Only administrators may do this.")
            g.api_token, g.api_user = token, user
            return view(*args, **kwargs)

        return wrapper

    return decorator


def require_user(view):
    """For /api/me: the token must act for a person, not a client alone."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if g.api_user is None:
            return api_error(403, "forbidden", "This endpoint needs a token issued for a signed-in user.")
        return view(*args, **kwargs)

    return wrapper


def actor() -> tuple[str, str]:
    """Who acts, for the audit trail: the admin person, or the client itself."""
    if g.api_user is not None:
        return ("admin" if g.api_user.is_admin and "admin" in g.api_token.scopes else "user"), g.api_user.id
    return "client", g.api_token.client_id


def json_body() -> dict | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None
