"""Token, revocation, introspection and UserInfo endpoints."""

from __future__ import annotations

from flask import current_app, jsonify, request

from idp.extensions import csrf
from idp.oidc.blueprint import bp
from idp.oidc.claims import user_claims
from idp.services import services

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers.update(NO_STORE)
    response.headers.update(headers or {})
    return response


def _form_problem() -> str | None:
    """RFC 6749 §3.2: form-encoded POST; §3.1: no parameter may appear twice."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return "The request must be sent as application/x-www-form-urlencoded."
    if request.args:
        return "Parameters must be sent in the request body, not the URL."
    for name in request.form:
        if len(request.form.getlist(name)) > 1:
            return f"The parameter '{name}' appears more than once."
    return None


def _server():
    return current_app.extensions["idp_oauth"]


@bp.post("/token")
@csrf.exempt
def token():
    problem = _form_problem()
    if problem:
        return _oauth_error("invalid_request", problem)
    if not request.form.get("grant_type"):
        return _oauth_error("invalid_request", "Missing 'grant_type'.")
    return _server().create_token_response()


@bp.post("/revoke")
@csrf.exempt
def revoke():
    problem = _form_problem()
    if problem:
        return _oauth_error("invalid_request", problem)
    return _server().create_endpoint_response("revocation")


@bp.post("/introspect")
@csrf.exempt
def introspect():
    problem = _form_problem()
    if problem:
        return _oauth_error("invalid_request", problem)
    return _server().create_endpoint_response("introspection")


def bearer_token() -> tuple[str | None, str | None]:
    """RFC 6750 §2: the Authorization header, or the form body for POST; never both."""
    header = request.headers.get("Authorization", "")
    from_header = header[7:].strip() if header[:7].lower() == "bearer " else None
    from_body = None
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        from_body = request.form.get("access_token")
    if from_header and from_body:
        return None, "Send the access token in one place only."
    return from_header or from_body, None


def bearer_challenge(error: str | None = None, description: str | None = None, status: int = 401):
    challenge = 'Bearer realm="idp"'
    body = {}
    if error:
        challenge += f', error="{error}"'
        body = {"error": error}
        if description:
            challenge += f', error_description="{description}"'
            body["error_description"] = description
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    response.headers.update(NO_STORE)
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo():
    token, problem = bearer_token()
    if problem:
        return bearer_challenge("invalid_request", problem, 400)
    if not token:
        return bearer_challenge()
    svc = services()
    active = svc.grants.active_access_token(token)
    if active is None or active.user_id is None:
        return bearer_challenge("invalid_token", "The access token is invalid, expired or revoked.")
    if "openid" not in active.scopes:
        return bearer_challenge("insufficient_scope", "The token was not issued for OpenID Connect.", 403)
    user = svc.accounts.profile(active.user_id)
    if not svc.accounts.can_sign_in(user):
        return bearer_challenge("invalid_token", "The access token is invalid, expired or revoked.")
    response = jsonify(user_claims(user, active.scopes))
    response.headers.update(NO_STORE)
    return response
