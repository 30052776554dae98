"""RP-Initiated Logout 1.0: end the session, then return only to a registered address."""

from __future__ import annotations

from flask import make_response, redirect, render_template, request

from idp.crypto.keys import InvalidJWT
from idp.extensions import csrf
from idp.oidc.authorize import redirect_with
from idp.oidc.blueprint import bp
from idp.services import services
from idp.web.cookies import clear_session_cookie
from idp.web.current import current_session, forget_current_session


class LogoutRefused(Exception):
    pass


def _hint_claims(hint: str | None) -> dict | None:
    if not hint:
        return None
    try:
        # Expired hints are accepted (RP-Initiated Logout §2): they identify, they do not authorize.
        _, claims = services().keys.ring().verify(hint, typ="JWT")
    except InvalidJWT:
        raise LogoutRefused("The id_token_hint is not a valid ID token from this server.") from None
    if claims.get("iss") != services().settings.issuer:
        raise LogoutRefused("The id_token_hint was issued by another server.")
    return claims


def _audiences(claims: dict) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


def _validated_target(values, claims: dict | None) -> tuple[str | None, object]:
    """The post-logout redirect URI, only when an ID token proves which client asks and it is registered."""
    svc = services()
    client_id = values.get("client_id")
    client = svc.clients.get(client_id) if client_id else None
    if client_id and client is None:
        raise LogoutRefused("This application is not registered here.")
    if claims is not None:
        audiences = _audiences(claims)
        if client is not None and client.client_id not in audiences:
            raise LogoutRefused("The client_id does not match the id_token_hint.")
        if client is None and audiences:
            client = svc.clients.get(audiences[0])
    target = values.get("post_logout_redirect_uri")
    if not target:
        return None, client
    if claims is None:
        raise LogoutRefused("A return address needs an id_token_hint; you have not been sent anywhere.")
    if client is None or target not in client.post_logout_redirect_uris:
        raise LogoutRefused("The return address is not registered for this application.")
    return target, client


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt  # the confirmation form below carries its own CSRF token
def end_session():
    values = request.args if request.method == "GET" else request.form
    session, user = current_session()
    try:
        claims = _hint_claims(values.get("id_token_hint"))
        target, client = _validated_target(values, claims)
    except LogoutRefused as refused:
        if session is None:
            return render_template("oidc/logged_out.html", message=str(refused)), 400
        return render_template("oidc/logout_confirm.html", user=user, message=str(refused)), 400
    if session is None:
        return _finish(target, values.get("state"))
    if claims is None or claims.get("sub") != session.user_id:
        # Without proof that the signed-in person's app asks, ask the person (logout CSRF, ASVS 10.6.2).
        return render_template("oidc/logout_confirm.html", user=user, message=None)
    services().sessions.end(session.id, "rp_logout", "user", session.user_id)
    return _finish(target, values.get("state"))


@bp.post("/logout/confirm")
def confirm_logout():
    session, _ = current_session()
    if session is not None:
        services().sessions.end(session.id, "user_logout", "user", session.user_id)
    return _finish(None, None)


def _finish(target: str | None, state: str | None):
    forget_current_session()
    if target:
        response = redirect(redirect_with(target, {"state": state}), code=302)
    else:
        response = make_response(render_template("oidc/logged_out.html", message=None))
    clear_session_cookie(response)
    return response
